//! Which node should own each shard: rendezvous hashing with bounded loads.
//!
//! Every node computes the same answer from the same set of live, healthy
//! nodes, without talking to the others. Each shard ranks the nodes by a
//! hash of (node, shard) and goes to the best-ranked node still below its
//! bound (`shards / nodes`, or one more for `shards % nodes` of them), so
//! the spread is even (no node more than one shard above another) and a node joining or leaving
//! moves few shards besides its own share.

use xxhash_rust::xxh3::xxh3_64_with_seed;

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
