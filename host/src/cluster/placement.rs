//! Which node should own each shard: rendezvous hashing with bounded loads.
//!
//! Every node computes the same answer from the same set of live, healthy
//! nodes, without talking to the others. Each shard ranks the nodes by a
//! hash of (node, shard) and goes to the best-ranked node still below its
//! bound (`shards / nodes`, or one more for `shards % nodes` of them), so
//! the spread is even (no node more than one shard above another) and a node joining or leaving
//! moves few shards besides its own share.

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::lease::NodeRecord;

/// The nodes that may own shards: alive, with healthy storage, not
/// leaving; sorted by id (what [`assign`] needs).
pub(crate) fn candidates(live: &[NodeRecord]) -> Vec<String> {
    let mut ids: Vec<String> = live
        .iter()
        .filter(|n| n.healthy && !n.leaving)
        .map(|n| n.id.clone())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// The owner (an index into `nodes`) of each of `shards` shards; `None`
/// when there is no node. `nodes` must be sorted and without duplicates
/// (every node must pass the same list).
pub(crate) fn assign(shards: usize, nodes: &[String]) -> Vec<Option<usize>> {
    if nodes.is_empty() {
        return vec![None; shards];
    }
    // Every node ends with `floor` or `floor + 1` shards; `rem` of them
    // with the extra one.
    let (floor, rem) = (shards / nodes.len(), shards % nodes.len());
    let mut at_ceiling = 0;
    let mut load = vec![0usize; nodes.len()];
    (0..shards)
        .map(|shard| {
            let mut ranked: Vec<(u64, usize)> = nodes
                .iter()
                .enumerate()
                .map(|(i, n)| (xxh3_64_with_seed(n.as_bytes(), shard as u64), i))
                .collect();
            ranked.sort_unstable_by(|a, b| b.cmp(a));
            let pick = ranked
                .iter()
                .map(|&(_, i)| i)
                .find(|&i| load[i] < floor || (load[i] == floor && at_ceiling < rem))
                .unwrap_or(ranked[0].1);
            if load[pick] == floor {
                at_ceiling += 1;
            }
            load[pick] += 1;
            Some(pick)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(n: usize) -> Vec<String> {
        let mut v: Vec<String> = (0..n).map(|i| format!("node-{i}")).collect();
        v.sort();
        v
    }

    #[test]
    fn degraded_and_leaving_nodes_get_no_shards() {
        let node = |id: &str, healthy: bool, leaving: bool| NodeRecord {
            id: id.into(),
            http: String::new(),
            healthy,
            leaving,
            shards: Vec::new(),
            started_ms: 0,
        };
        let live = [
            node("c", true, false),
            node("a", true, false),
            node("b", false, false),
            node("d", true, true),
        ];
        let c = candidates(&live);
        assert_eq!(c, vec!["a".to_string(), "c".to_string()]);
        let owners = assign(16, &c);
        assert!(
            owners
                .iter()
                .all(|o| o.is_some_and(|i| c[i] == "a" || c[i] == "c"))
        );
    }

    #[test]
    fn no_node_no_owner() {
        assert_eq!(assign(3, &[]), vec![None, None, None]);
    }

    proptest! {
        #[test]
        fn every_shard_has_one_owner_and_loads_differ_by_at_most_one(
            shards in 1usize..200, nodes in 1usize..9,
        ) {
            let n = names(nodes);
            let a = assign(shards, &n);
            let mut load = vec![0usize; nodes];
            for o in &a {
                load[o.expect("an owner")] += 1;
            }
            let (min, max) = (load.iter().min().unwrap(), load.iter().max().unwrap());
            prop_assert!(max - min <= 1, "loads {load:?}");
            prop_assert_eq!(assign(shards, &n), a, "deterministic");
        }

        #[test]
        fn a_joining_node_moves_about_its_share(shards in 16usize..128, nodes in 2usize..6) {
            let before = names(nodes);
            let mut after = before.clone();
            after.push("node-zz-new".into());
            after.sort();
            let a = assign(shards, &before);
            let b = assign(shards, &after);
            let moved = (0..shards)
                .filter(|&s| before[a[s].unwrap()] != after[b[s].unwrap()])
                .count();
            // Its own share, plus the ripple of the load bound.
            prop_assert!(moved <= 2 * shards.div_ceil(nodes + 1) + nodes, "moved {moved} of {shards}");
        }
    }
}
