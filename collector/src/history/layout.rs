//! The history's key layout (see the table atop [`super`]) and its record chunks: key
//! encodings, the index's span levels and groups, and the chunk and manifest values.

use super::*;

pub(super) fn index_prefix(region: &str, attr: u8, value: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + region.len() + value.len() + 1 + 1 + 16);
    k.extend_from_slice(b"i/");
    k.extend_from_slice(region.as_bytes());
    k.push(0);
    k.push(attr);
    k.extend_from_slice(value.as_bytes());
    k.push(0);
    k
}

/// Prefix of one second's `s/` keys: `s/<eventTime u64 BE>`.
pub(super) fn second_prefix(time: u64) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[..2].copy_from_slice(b"s/");
    k[2..].copy_from_slice(&time.to_be_bytes());
    k
}

/// FNV-1a of an eventID, then murmur3's 64-bit finalizer (FNV alone leaves the top byte, the
/// `h/` bucket, nearly blind to an ID's last characters). Stored (in `s/` and `h/`), so it must
/// never change within a layout. A collision only costs a record read: the eventID is
/// compared on the record itself.
pub(super) fn id_hash(id: &str) -> u64 {
    let mut h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Prefix of the eventID buckets: `h/<top byte of id_hash>`.
pub(super) fn id_bucket_prefix(hash: u64) -> [u8; 3] {
    [b'h', b'/', (hash >> 56) as u8]
}

pub(super) fn chunk_key(c: u64) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[..2].copy_from_slice(b"e/");
    k[2..].copy_from_slice(&c.to_be_bytes());
    k
}

pub(super) const FORMAT_KEY: &[u8] = b"v/format";
pub(super) const FORMAT: &[u8] = b"4";
/// Prefix of the region registry: `r/<awsRegion>` for every region with indexed management
/// events.
pub(super) const REGION_PREFIX: &[u8] = b"r/";
/// Prefix of the Insights records' region registry: `n/<awsRegion>`.
pub(super) const INSIGHT_REGION_PREFIX: &[u8] = b"n/";
/// Set in the `attr` byte of an Insights record's index keys (see the module doc).
pub(super) const INSIGHT: u8 = 0x80;

/// The region registry of management events, or of Insights records.
pub(super) fn region_prefix(insight: bool) -> &'static [u8] {
    if insight {
        INSIGHT_REGION_PREFIX
    } else {
        REGION_PREFIX
    }
}

pub(super) fn registry_key(insight: bool, region: &str) -> Vec<u8> {
    let mut k = region_prefix(insight).to_vec();
    k.extend_from_slice(region.as_bytes());
    k
}

/// Page cache of the history store opened by [`History::open`]: `[history] cache_bytes`'s
/// default.
pub const DEFAULT_CACHE_BYTES: u64 = 48 * 1024 * 1024;

/// Largest chunk JSON read back (CloudTrail's record limit is 256 KB, a chunk holds 64 KiB
/// or one record; this leaves room).
pub(super) const MAX_CHUNK: usize = 4 * 1024 * 1024;
/// zstd level of stored chunks: the fastest, and most of the gain on JSON (level 3 took 5% of
/// an insert for a few percent less disk).
pub(super) const ZSTD_LEVEL: i32 = 1;
/// A chunk is cut at this many records or JSON bytes (a record larger than that is alone).
/// (64 KiB: sled copies a leaf on every write, so fewer, larger chunk keys made inserts
/// faster; a lookup page decompresses at most 50 chunks.)
pub(super) const CHUNK_RECORDS: usize = 256;
pub(super) const CHUNK_BYTES: usize = 64 * 1024;
/// The most time (seconds) between the newest and the oldest entry of an index group, per
/// level (see the module doc).
pub(super) const SPANS: [u64; 5] = [0, 8, 128, 2048, 32768];
/// A group is not moved to a wider level once it has this many entries...
pub(super) const GROUP_MIN: usize = 16;
/// ...and never holds more than this.
pub(super) const GROUP_MAX: usize = 1024;
/// Bytes of one index entry: `!eventTime` + `n`.
pub(super) const ENTRY: usize = 16;

pub(super) fn u64_at(b: &[u8]) -> Option<u64> {
    b.get(..8)?.try_into().ok().map(u64::from_be_bytes)
}

pub(super) fn u32_at(b: &[u8]) -> Option<u32> {
    b.get(..4)?.try_into().ok().map(u32::from_be_bytes)
}

pub(super) fn level_of(span: u64) -> Option<usize> {
    SPANS.iter().position(|&s| span <= s)
}

/// Cuts a value's entries (ascending: newest first) into groups, with their levels.
pub(super) fn split_groups(entries: &[(u64, u64)]) -> Vec<(u8, &[(u64, u64)])> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut level = 0;
    for i in 1..entries.len() {
        let count = i - start;
        let span = entries[i].0 - entries[start].0;
        match level_of(span) {
            Some(l) if count < GROUP_MAX && (l == level || count < GROUP_MIN) => level = l,
            _ => {
                out.push((level as u8, &entries[start..i]));
                start = i;
                level = 0;
            }
        }
    }
    if start < entries.len() {
        out.push((level as u8, &entries[start..]));
    }
    out
}

/// One decompressed chunk: per slot (eventTime, start, end) in `json`.
pub(super) struct Chunk {
    pub(super) slots: Vec<(u64, usize, usize)>,
    pub(super) json: Vec<u8>,
}

impl Chunk {
    pub(super) fn decode(stored: &[u8], dctx: &mut zstd::bulk::Decompressor) -> Option<Chunk> {
        let count = usize::from(u16::from_be_bytes(stored.get(..2)?.try_into().ok()?));
        let total = u32_at(stored.get(2..)?)? as usize;
        if total > MAX_CHUNK {
            return None;
        }
        let mut slots = Vec::with_capacity(count);
        let mut at = 0;
        let mut pos = 6;
        for _ in 0..count {
            let time = u64_at(stored.get(pos..)?)?;
            let len = u32_at(stored.get(pos + 8..)?)? as usize;
            slots.push((time, at, at + len));
            at += len;
            pos += 12;
        }
        if at != total {
            return None;
        }
        let json = dctx.decompress(stored.get(pos..)?, total).ok()?;
        (json.len() == total).then_some(Chunk { slots, json })
    }

    pub(super) fn get(&self, slot: usize) -> Option<(u64, &[u8])> {
        let &(time, a, b) = self.slots.get(slot)?;
        Some((time, self.json.get(a..b)?))
    }
}

/// Reads records by number within one lookup, each chunk fetched and decompressed once.
pub(super) struct Reader<'h> {
    pub(super) db: &'h sled::Db,
    pub(super) dctx: zstd::bulk::Decompressor<'static>,
    pub(super) chunks: HashMap<u64, Option<Chunk>>,
}

impl<'h> Reader<'h> {
    pub(super) fn new(db: &'h sled::Db) -> Result<Reader<'h>> {
        Ok(Reader {
            db,
            dctx: zstd::bulk::Decompressor::new()?,
            chunks: HashMap::new(),
        })
    }

    /// Event `n`: (eventTime, JSON), `None` if gone or unreadable.
    pub(super) fn event(&mut self, n: u64) -> Result<Option<(u64, &[u8])>> {
        let c = n >> 16;
        if !self.chunks.contains_key(&c) {
            let chunk = match self.db.get(chunk_key(c))? {
                Some(stored) => Chunk::decode(&stored, &mut self.dctx),
                None => None,
            };
            self.chunks.insert(c, chunk);
        }
        Ok(self
            .chunks
            .get(&c)
            .and_then(Option::as_ref)
            .and_then(|chunk| chunk.get((n & 0xffff) as usize)))
    }
}

/// An insert's expiry manifest: what to remove when its newest event expires.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Manifest {
    pub(super) ids: Vec<Vec<u8>>,
    pub(super) groups: Vec<Vec<u8>>,
    pub(super) chunks: Vec<u64>,
}

impl Manifest {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for list in [&self.ids, &self.groups] {
            out.extend_from_slice(&(list.len() as u32).to_be_bytes());
            for item in list {
                out.extend_from_slice(&(item.len() as u32).to_be_bytes());
                out.extend_from_slice(item);
            }
        }
        out.extend_from_slice(&(self.chunks.len() as u32).to_be_bytes());
        for c in &self.chunks {
            out.extend_from_slice(&c.to_be_bytes());
        }
        out
    }

    pub(super) fn decode(b: &[u8]) -> Option<Manifest> {
        let mut pos = 0;
        let mut lists = [Vec::new(), Vec::new()];
        for list in &mut lists {
            let count = u32_at(b.get(pos..)?)? as usize;
            pos += 4;
            for _ in 0..count {
                let len = u32_at(b.get(pos..)?)? as usize;
                pos += 4;
                list.push(b.get(pos..pos + len)?.to_vec());
                pos += len;
            }
        }
        let count = u32_at(b.get(pos..)?)? as usize;
        pos += 4;
        let mut chunks = Vec::with_capacity(count);
        for _ in 0..count {
            chunks.push(u64_at(b.get(pos..)?)?);
            pos += 8;
        }
        let [ids, groups] = lists;
        Some(Manifest {
            ids,
            groups,
            chunks,
        })
    }
}
