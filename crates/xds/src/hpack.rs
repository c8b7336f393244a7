//! HPACK (RFC 7541) for [`crate::conn`]: a decoder for request header
//! blocks (dynamic table and Huffman-coded strings included), and the
//! literal encodings responses use (no dynamic table, no Huffman).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::OnceLock;

/// A header block that does not decode (a COMPRESSION_ERROR).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Error(pub(crate) &'static str);

/// RFC 7541 Appendix A.
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// RFC 7541 Appendix B: the code and its length in bits, by symbol (256: EOS).
const CODES: [(u32, u8); 257] = [
    (0x1ff8, 13),
    (0x7fffd8, 23),
    (0xfffffe2, 28),
    (0xfffffe3, 28),
    (0xfffffe4, 28),
    (0xfffffe5, 28),
    (0xfffffe6, 28),
    (0xfffffe7, 28),
    (0xfffffe8, 28),
    (0xffffea, 24),
    (0x3ffffffc, 30),
    (0xfffffe9, 28),
    (0xfffffea, 28),
    (0x3ffffffd, 30),
    (0xfffffeb, 28),
    (0xfffffec, 28),
    (0xfffffed, 28),
    (0xfffffee, 28),
    (0xfffffef, 28),
    (0xffffff0, 28),
    (0xffffff1, 28),
    (0xffffff2, 28),
    (0x3ffffffe, 30),
    (0xffffff3, 28),
    (0xffffff4, 28),
    (0xffffff5, 28),
    (0xffffff6, 28),
    (0xffffff7, 28),
    (0xffffff8, 28),
    (0xffffff9, 28),
    (0xffffffa, 28),
    (0xffffffb, 28),
    (0x14, 6),
    (0x3f8, 10),
    (0x3f9, 10),
    (0xffa, 12),
    (0x1ff9, 13),
    (0x15, 6),
    (0xf8, 8),
    (0x7fa, 11),
    (0x3fa, 10),
    (0x3fb, 10),
    (0xf9, 8),
    (0x7fb, 11),
    (0xfa, 8),
    (0x16, 6),
    (0x17, 6),
    (0x18, 6),
    (0x0, 5),
    (0x1, 5),
    (0x2, 5),
    (0x19, 6),
    (0x1a, 6),
    (0x1b, 6),
    (0x1c, 6),
    (0x1d, 6),
    (0x1e, 6),
    (0x1f, 6),
    (0x5c, 7),
    (0xfb, 8),
    (0x7ffc, 15),
    (0x20, 6),
    (0xffb, 12),
    (0x3fc, 10),
    (0x1ffa, 13),
    (0x21, 6),
    (0x5d, 7),
    (0x5e, 7),
    (0x5f, 7),
    (0x60, 7),
    (0x61, 7),
    (0x62, 7),
    (0x63, 7),
    (0x64, 7),
    (0x65, 7),
    (0x66, 7),
    (0x67, 7),
    (0x68, 7),
    (0x69, 7),
    (0x6a, 7),
    (0x6b, 7),
    (0x6c, 7),
    (0x6d, 7),
    (0x6e, 7),
    (0x6f, 7),
    (0x70, 7),
    (0x71, 7),
    (0x72, 7),
    (0xfc, 8),
    (0x73, 7),
    (0xfd, 8),
    (0x1ffb, 13),
    (0x7fff0, 19),
    (0x1ffc, 13),
    (0x3ffc, 14),
    (0x22, 6),
    (0x7ffd, 15),
    (0x3, 5),
    (0x23, 6),
    (0x4, 5),
    (0x24, 6),
    (0x5, 5),
    (0x25, 6),
    (0x26, 6),
    (0x27, 6),
    (0x6, 5),
    (0x74, 7),
    (0x75, 7),
    (0x28, 6),
    (0x29, 6),
    (0x2a, 6),
    (0x7, 5),
    (0x2b, 6),
    (0x76, 7),
    (0x2c, 6),
    (0x8, 5),
    (0x9, 5),
    (0x2d, 6),
    (0x77, 7),
    (0x78, 7),
    (0x79, 7),
    (0x7a, 7),
    (0x7b, 7),
    (0x7ffe, 15),
    (0x7fc, 11),
    (0x3ffd, 14),
    (0x1ffd, 13),
    (0xffffffc, 28),
    (0xfffe6, 20),
    (0x3fffd2, 22),
    (0xfffe7, 20),
    (0xfffe8, 20),
    (0x3fffd3, 22),
    (0x3fffd4, 22),
    (0x3fffd5, 22),
    (0x7fffd9, 23),
    (0x3fffd6, 22),
    (0x7fffda, 23),
    (0x7fffdb, 23),
    (0x7fffdc, 23),
    (0x7fffdd, 23),
    (0x7fffde, 23),
    (0xffffeb, 24),
    (0x7fffdf, 23),
    (0xffffec, 24),
    (0xffffed, 24),
    (0x3fffd7, 22),
    (0x7fffe0, 23),
    (0xffffee, 24),
    (0x7fffe1, 23),
    (0x7fffe2, 23),
    (0x7fffe3, 23),
    (0x7fffe4, 23),
    (0x1fffdc, 21),
    (0x3fffd8, 22),
    (0x7fffe5, 23),
    (0x3fffd9, 22),
    (0x7fffe6, 23),
    (0x7fffe7, 23),
    (0xffffef, 24),
    (0x3fffda, 22),
    (0x1fffdd, 21),
    (0xfffe9, 20),
    (0x3fffdb, 22),
    (0x3fffdc, 22),
    (0x7fffe8, 23),
    (0x7fffe9, 23),
    (0x1fffde, 21),
    (0x7fffea, 23),
    (0x3fffdd, 22),
    (0x3fffde, 22),
    (0xfffff0, 24),
    (0x1fffdf, 21),
    (0x3fffdf, 22),
    (0x7fffeb, 23),
    (0x7fffec, 23),
    (0x1fffe0, 21),
    (0x1fffe1, 21),
    (0x3fffe0, 22),
    (0x1fffe2, 21),
    (0x7fffed, 23),
    (0x3fffe1, 22),
    (0x7fffee, 23),
    (0x7fffef, 23),
    (0xfffea, 20),
    (0x3fffe2, 22),
    (0x3fffe3, 22),
    (0x3fffe4, 22),
    (0x7ffff0, 23),
    (0x3fffe5, 22),
    (0x3fffe6, 22),
    (0x7ffff1, 23),
    (0x3ffffe0, 26),
    (0x3ffffe1, 26),
    (0xfffeb, 20),
    (0x7fff1, 19),
    (0x3fffe7, 22),
    (0x7ffff2, 23),
    (0x3fffe8, 22),
    (0x1ffffec, 25),
    (0x3ffffe2, 26),
    (0x3ffffe3, 26),
    (0x3ffffe4, 26),
    (0x7ffffde, 27),
    (0x7ffffdf, 27),
    (0x3ffffe5, 26),
    (0xfffff1, 24),
    (0x1ffffed, 25),
    (0x7fff2, 19),
    (0x1fffe3, 21),
    (0x3ffffe6, 26),
    (0x7ffffe0, 27),
    (0x7ffffe1, 27),
    (0x3ffffe7, 26),
    (0x7ffffe2, 27),
    (0xfffff2, 24),
    (0x1fffe4, 21),
    (0x1fffe5, 21),
    (0x3ffffe8, 26),
    (0x3ffffe9, 26),
    (0xffffffd, 28),
    (0x7ffffe3, 27),
    (0x7ffffe4, 27),
    (0x7ffffe5, 27),
    (0xfffec, 20),
    (0xfffff3, 24),
    (0xfffed, 20),
    (0x1fffe6, 21),
    (0x3fffe9, 22),
    (0x1fffe7, 21),
    (0x1fffe8, 21),
    (0x7ffff3, 23),
    (0x3fffea, 22),
    (0x3fffeb, 22),
    (0x1ffffee, 25),
    (0x1ffffef, 25),
    (0xfffff4, 24),
    (0xfffff5, 24),
    (0x3ffffea, 26),
    (0x7ffff4, 23),
    (0x3ffffeb, 26),
    (0x7ffffe6, 27),
    (0x3ffffec, 26),
    (0x3ffffed, 26),
    (0x7ffffe7, 27),
    (0x7ffffe8, 27),
    (0x7ffffe9, 27),
    (0x7ffffea, 27),
    (0x7ffffeb, 27),
    (0xffffffe, 28),
    (0x7ffffec, 27),
    (0x7ffffed, 27),
    (0x7ffffee, 27),
    (0x7ffffef, 27),
    (0x7fffff0, 27),
    (0x3ffffee, 26),
    (0x3fffffff, 30),
];

/// A child in [`tree`]: another node, or (with this bit) a symbol.
const LEAF: u16 = 0x8000;

/// The Huffman code as a binary tree, built on first use: node 0 is the
/// root, each node its two children (0 where no code leads).
fn tree() -> &'static [[u16; 2]] {
    static TREE: OnceLock<Vec<[u16; 2]>> = OnceLock::new();
    TREE.get_or_init(|| {
        let mut nodes = vec![[0u16; 2]];
        for (symbol, &(code, bits)) in CODES.iter().enumerate() {
            let mut node = 0;
            for i in (0..bits).rev() {
                let bit = ((code >> i) & 1) as usize;
                if i == 0 {
                    nodes[node][bit] = LEAF | symbol as u16;
                } else {
                    if nodes[node][bit] == 0 {
                        nodes.push([0; 2]);
                        nodes[node][bit] = (nodes.len() - 1) as u16;
                    }
                    node = usize::from(nodes[node][bit]);
                }
            }
        }
        nodes
    })
}

/// A Huffman-coded string (RFC 7541 §5.2): no EOS inside, padding of at
/// most 7 bits, all ones.
fn huffman(coded: &[u8]) -> Result<Vec<u8>, Error> {
    let tree = tree();
    let mut out = Vec::with_capacity(coded.len() * 8 / 5);
    let mut node = 0usize;
    // Bits since the last symbol, and whether they were all ones.
    let mut pending = 0u32;
    let mut ones = true;
    for &byte in coded {
        for i in (0..8).rev() {
            let bit = usize::from((byte >> i) & 1);
            pending += 1;
            ones &= bit == 1;
            let next = tree[node][bit];
            if next & LEAF != 0 {
                let symbol = next & !LEAF;
                if symbol == 256 {
                    return Err(Error("EOS inside a Huffman-coded string"));
                }
                out.push(symbol as u8);
                node = 0;
                pending = 0;
                ones = true;
            } else if next == 0 {
                return Err(Error("not a Huffman code"));
            } else {
                node = usize::from(next);
            }
        }
    }
    if pending > 7 || !ones {
        return Err(Error("bad padding in a Huffman-coded string"));
    }
    Ok(out)
}

/// An integer with an `n`-bit prefix (RFC 7541 §5.1), from the front of `buf`.
fn int(buf: &mut &[u8], n: u8) -> Result<usize, Error> {
    let (&first, rest) = buf.split_first().ok_or(Error("a header block cut short"))?;
    *buf = rest;
    let max = (1usize << n) - 1;
    let mut value = usize::from(first) & max;
    if value < max {
        return Ok(value);
    }
    let mut shift = 0;
    loop {
        let (&b, rest) = buf.split_first().ok_or(Error("a header block cut short"))?;
        *buf = rest;
        value += usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
        if shift > 21 {
            return Err(Error("an integer over 2^28"));
        }
    }
}

/// A string literal (RFC 7541 §5.2), from the front of `buf`.
fn string<'a>(buf: &mut &'a [u8]) -> Result<Cow<'a, [u8]>, Error> {
    let coded = buf.first().is_some_and(|b| b & 0x80 != 0);
    let len = int(buf, 7)?;
    if len > buf.len() {
        return Err(Error("a string longer than its header block"));
    }
    let (s, rest) = buf.split_at(len);
    *buf = rest;
    if coded {
        huffman(s).map(Cow::Owned)
    } else {
        Ok(Cow::Borrowed(s))
    }
}

/// Decodes the header blocks of one connection, in order.
pub(crate) struct Decoder {
    /// Newest first.
    table: VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
    max_size: usize,
    /// What our SETTINGS allow the table to grow to (4096, the default).
    limit: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            table: VecDeque::new(),
            size: 0,
            max_size: 4096,
            limit: 4096,
        }
    }
}

impl Decoder {
    /// The name and value at `index` (1-based: static table, then dynamic).
    fn get(&self, index: usize) -> Result<(&[u8], &[u8]), Error> {
        match index {
            0 => Err(Error("index 0")),
            1..=61 => {
                let (n, v) = STATIC[index - 1];
                Ok((n.as_bytes(), v.as_bytes()))
            }
            _ => self
                .table
                .get(index - 62)
                .map(|(n, v)| (&n[..], &v[..]))
                .ok_or(Error("an index past the tables")),
        }
    }

    fn evict_to(&mut self, max: usize) {
        while self.size > max {
            match self.table.pop_back() {
                Some((n, v)) => self.size -= n.len() + v.len() + 32,
                None => break,
            }
        }
    }

    fn insert(&mut self, name: Vec<u8>, value: Vec<u8>) {
        let size = name.len() + value.len() + 32;
        if size > self.max_size {
            // Larger than the table: the table empties, nothing is added.
            self.table.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max_size - size);
        self.size += size;
        self.table.push_front((name, value));
    }

    /// Calls `field` with each name and value of `block`, in order.
    pub(crate) fn decode(
        &mut self,
        mut block: &[u8],
        mut field: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), Error> {
        let mut first = true;
        while let Some(&b) = block.first() {
            if b & 0x80 != 0 {
                // Indexed.
                let (n, v) = self.get(int(&mut block, 7)?)?;
                field(n, v);
            } else if b & 0xc0 == 0x40 {
                // Literal, added to the table.
                let index = int(&mut block, 6)?;
                let name = match index {
                    0 => string(&mut block)?.into_owned(),
                    i => self.get(i)?.0.to_vec(),
                };
                let value = string(&mut block)?.into_owned();
                field(&name, &value);
                self.insert(name, value);
            } else if b & 0xe0 == 0x20 {
                // A table size update: only before the block's first field.
                if !first {
                    return Err(Error("a table size update after a header field"));
                }
                let size = int(&mut block, 5)?;
                if size > self.limit {
                    return Err(Error("a table size over SETTINGS_HEADER_TABLE_SIZE"));
                }
                self.max_size = size;
                self.evict_to(size);
                continue;
            } else {
                // Literal, not added (0000) or never to be (0001).
                let index = int(&mut block, 4)?;
                let name: Cow<'_, [u8]> = match index {
                    0 => string(&mut block)?,
                    i => Cow::Owned(self.get(i)?.0.to_vec()),
                };
                let value = string(&mut block)?;
                field(&name, &value);
            }
            first = false;
        }
        Ok(())
    }
}

/// An HPACK integer with an `n`-bit prefix, its first byte or-ed with `first`.
pub(crate) fn put_int(out: &mut Vec<u8>, n: u8, first: u8, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// A header as a literal without indexing, with a literal name.
pub(crate) fn put_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0);
    put_int(out, 7, 0, name.len());
    out.extend_from_slice(name);
    put_int(out, 7, 0, value.len());
    out.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(d: &mut Decoder, block: &[u8]) -> Result<Vec<(String, String)>, Error> {
        let mut out = Vec::new();
        d.decode(block, |n, v| {
            out.push((
                String::from_utf8_lossy(n).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            ))
        })?;
        Ok(out)
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn rfc_7541_c4_requests_with_huffman_coding() {
        let mut d = Decoder::default();
        let first = decode(&mut d, &hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff")).unwrap();
        assert_eq!(
            first,
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
            ])
        );
        assert_eq!(d.size, 57);
        // The second request refers to the first one's table entry (index 62).
        let second = decode(&mut d, &hex("8286 84be 5886 a8eb 1064 9cbf")).unwrap();
        assert_eq!(
            second,
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache"),
            ])
        );
        assert_eq!(d.size, 110);
    }

    #[test]
    fn every_code_decodes_as_an_independent_decoder_does() {
        // Each symbol on its own, padded with ones: loona-hpack's decoder
        // (built from its own copy of the table) must read the same byte.
        let mut other = loona_hpack::huffman::HuffmanDecoder::new();
        for (symbol, &(code, bits)) in CODES.iter().enumerate().take(256) {
            let padded_bits = bits.div_ceil(8) * 8;
            let pad = u64::from(padded_bits - bits);
            let word = (u64::from(code) << pad) | ((1u64 << pad) - 1);
            let bytes: Vec<u8> = (0..padded_bits / 8)
                .rev()
                .map(|i| (word >> (8 * u32::from(i))) as u8)
                .collect();
            assert_eq!(
                huffman(&bytes).unwrap(),
                vec![symbol as u8],
                "symbol {symbol}"
            );
            assert_eq!(other.decode(&bytes).unwrap(), vec![symbol as u8]);
        }
    }

    #[test]
    fn blocks_from_another_encoder_decode_to_the_same_fields() {
        let mut enc = loona_hpack::Encoder::new();
        let mut d = Decoder::default();
        let fields: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"https"),
            (
                b":path",
                b"/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources",
            ),
            (b":authority", b"control-plane:5678"),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            (b"authorization", b"eyJhbGciOiJSUzI1NiJ9.payload.signature"),
        ];
        for _ in 0..3 {
            let block = enc.encode(fields.iter().copied());
            let got = decode(&mut d, &block).unwrap();
            let want: Vec<(String, String)> = fields
                .iter()
                .map(|(n, v)| {
                    (
                        String::from_utf8_lossy(n).into_owned(),
                        String::from_utf8_lossy(v).into_owned(),
                    )
                })
                .collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn what_does_not_decode_is_an_error_not_a_panic() {
        let mut d = Decoder::default();
        for (block, why) in [
            (&[0x80][..], "index 0"),
            (&[0xff, 0x00][..], "an index past the tables"),
            (
                &[0x41, 0x05, b'a'][..],
                "a string longer than its header block",
            ),
            (
                &[0x82, 0x3f, 0xe1, 0x1f][..],
                "a table size update after a header field",
            ),
            (
                &[0x3f, 0xe2, 0x1f][..],
                "a table size over SETTINGS_HEADER_TABLE_SIZE",
            ),
            (
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..],
                "an integer over 2^28",
            ),
            // "a" is 00011 (5 bits): three bits of padding that are zeros.
            (
                &[0x04, 0x81, 0x18][..],
                "bad padding in a Huffman-coded string",
            ),
        ] {
            assert_eq!(decode(&mut d, block), Err(Error(why)), "{block:x?}");
        }
    }

    #[test]
    fn literals_and_integers_round_trip() {
        let mut block = Vec::new();
        put_literal(&mut block, b"grpc-message", &[b'x'; 300]);
        put_literal(&mut block, b"grpc-status", b"0");
        let got = decode(&mut Decoder::default(), &block).unwrap();
        assert_eq!(got[0].1.len(), 300);
        assert_eq!(got[1], ("grpc-status".to_string(), "0".to_string()));
    }

    #[test]
    fn the_table_evicts_the_oldest_and_shrinks_on_request() {
        let mut d = Decoder::default();
        // Literal with indexing, new name: 32 + 4 + 2000 bytes each.
        let entry = |name: &[u8; 4]| {
            let mut b = vec![0x40];
            put_int(&mut b, 7, 0, 4);
            b.extend_from_slice(name);
            put_int(&mut b, 7, 0, 2000);
            b.extend(std::iter::repeat_n(b'v', 2000));
            b
        };
        decode(&mut d, &entry(b"aaaa")).unwrap();
        decode(&mut d, &entry(b"bbbb")).unwrap();
        decode(&mut d, &entry(b"cccc")).unwrap();
        assert_eq!(d.table.len(), 2);
        assert_eq!(decode(&mut d, &[0xbe]).unwrap()[0].0, "cccc");
        assert_eq!(decode(&mut d, &[0xbf]).unwrap()[0].0, "bbbb");
        // Size 0: everything goes.
        decode(&mut d, &[0x20]).unwrap();
        assert_eq!((d.table.len(), d.size), (0, 0));
        assert_eq!(
            decode(&mut d, &[0xbe]),
            Err(Error("an index past the tables"))
        );
    }
}
