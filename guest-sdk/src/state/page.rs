//! The packed scan page of the WIT `scan-page` record.

/// Why a packed page could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageFormatError {
    /// Entry `index` runs past the end of the buffer.
    Truncated {
        /// Position of the cut entry.
        index: u32,
    },
    /// Bytes remain after the declared number of entries.
    TrailingBytes,
}

impl core::fmt::Display for PageFormatError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Truncated { index } => {
                write!(f, "entry {index} of the scan page runs past its end")
            }
            Self::TrailingBytes => write!(f, "bytes remain after the last entry of the scan page"),
        }
    }
}

impl std::error::Error for PageFormatError {}

/// One page of a range scan: up to `limit` entries in scan order, plus the
/// point to resume from when the range holds more.
///
/// On the wire (the WIT `scan-page`) the entries travel packed in one buffer,
/// for each entry in scan order `key length: u32 LE, key, value length: u32
/// LE, value`, so a page costs the guest one allocation instead of two per
/// entry. [`PageBuilder`] writes that layout, [`Page::from_packed`] checks it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    entries: Vec<u8>,
    count: u32,
    resume: Option<Vec<u8>>,
}

impl Page {
    /// Check a packed buffer of `count` entries and wrap it.
    pub fn from_packed(
        entries: Vec<u8>,
        count: u32,
        resume: Option<Vec<u8>>,
    ) -> Result<Self, PageFormatError> {
        let mut rest = entries.as_slice();
        for index in 0..count {
            let (_, r) = split_entry(rest).ok_or(PageFormatError::Truncated { index })?;
            rest = r;
        }
        if !rest.is_empty() {
            return Err(PageFormatError::TrailingBytes);
        }
        Ok(Self {
            entries,
            count,
            resume,
        })
    }

    /// Number of entries on the page.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// True when the page holds no entry.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Set when the range holds more entries than the page: the key of the
    /// page's last entry. Resume an ascending scan with
    /// `lower = Excluded(resume)`, a descending one with
    /// `upper = Excluded(resume)`.
    pub fn resume(&self) -> Option<&[u8]> {
        self.resume.as_deref()
    }

    /// The entries, in scan order, borrowed from the page.
    pub fn iter(&self) -> PageIter<'_> {
        PageIter {
            rest: &self.entries,
            remaining: self.count,
        }
    }

    /// The packed entries.
    pub fn packed(&self) -> &[u8] {
        &self.entries
    }

    /// The entry that starts at byte `offset` of the packed entries, and the
    /// offset of the next one.
    pub(crate) fn entry_at(&self, offset: usize) -> Option<(Entry<'_>, usize)> {
        let rest = self.entries.get(offset..)?;
        let (entry, after) = split_entry(rest)?;
        Some((entry, self.entries.len() - after.len()))
    }

    /// Split into packed entries, count and resume point.
    pub fn into_parts(self) -> (Vec<u8>, u32, Option<Vec<u8>>) {
        (self.entries, self.count, self.resume)
    }
}

impl<'a> IntoIterator for &'a Page {
    type Item = (&'a [u8], &'a [u8]);
    type IntoIter = PageIter<'a>;

    fn into_iter(self) -> PageIter<'a> {
        self.iter()
    }
}

/// Iterator over the entries of a [`Page`].
#[derive(Debug, Clone)]
pub struct PageIter<'a> {
    rest: &'a [u8],
    remaining: u32,
}

impl<'a> Iterator for PageIter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        // The page was checked when it was built, so this cannot fail.
        let (entry, rest) = split_entry(self.rest)?;
        self.rest = rest;
        self.remaining -= 1;
        Some(entry)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining as usize, Some(self.remaining as usize))
    }
}

impl ExactSizeIterator for PageIter<'_> {}

/// A key and its value.
type Entry<'a> = (&'a [u8], &'a [u8]);

type EntryAndRest<'a> = (Entry<'a>, &'a [u8]);

fn split_entry(bytes: &[u8]) -> Option<EntryAndRest<'_>> {
    let (key, rest) = split_field(bytes)?;
    let (value, rest) = split_field(rest)?;
    Some(((key, value), rest))
}

fn split_field(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = bytes.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
    rest.split_at_checked(len)
}

/// Writes entries in the packed page layout (used by the host and by
/// [`crate::MemoryState`], so the two cannot drift apart).
#[derive(Debug, Clone, Default)]
pub struct PageBuilder {
    buf: Vec<u8>,
    count: u32,
}

impl PageBuilder {
    /// An empty page.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append one entry.
    ///
    /// # Panics
    /// If the key or the value is 4 GiB or longer.
    pub fn push(&mut self, key: &[u8], value: &[u8]) {
        for field in [key, value] {
            let len = u32::try_from(field.len()).expect("a key or value of 4 GiB or more");
            self.buf.extend_from_slice(&len.to_le_bytes());
            self.buf.extend_from_slice(field);
        }
        self.count += 1;
    }

    /// Number of entries pushed so far.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// True when no entry was pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes written so far (for output caps).
    pub fn byte_len(&self) -> usize {
        self.buf.len()
    }

    /// The packed entries and their count: the `entries` and `count` fields
    /// of the WIT `scan-page`.
    pub fn into_parts(self) -> (Vec<u8>, u32) {
        (self.buf, self.count)
    }

    /// Finish as a [`Page`] with the given resume point.
    pub fn finish(self, resume: Option<Vec<u8>>) -> Page {
        Page {
            entries: self.buf,
            count: self.count,
            resume,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_errors() {
        let mut b = PageBuilder::new();
        b.push(b"a", b"1");
        b.push(b"", b"");
        b.push(b"key", &[0; 300]);
        let (bytes, count) = b.into_parts();
        let page = Page::from_packed(bytes.clone(), count, Some(b"key".to_vec())).unwrap();
        let entries: Vec<_> = page.iter().collect();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0], (&b"a"[..], &b"1"[..]));
        assert_eq!(entries[1], (&b""[..], &b""[..]));
        assert_eq!(entries[2].1.len(), 300);
        assert_eq!(page.resume(), Some(&b"key"[..]));

        assert_eq!(
            Page::from_packed(bytes.clone(), 4, None).unwrap_err(),
            PageFormatError::Truncated { index: 3 }
        );
        assert_eq!(
            Page::from_packed(bytes.clone(), 2, None).unwrap_err(),
            PageFormatError::TrailingBytes
        );
        assert_eq!(
            Page::from_packed(bytes[..bytes.len() - 1].to_vec(), 3, None).unwrap_err(),
            PageFormatError::Truncated { index: 2 }
        );
        assert!(Page::from_packed(vec![], 0, None).unwrap().is_empty());
    }
}
