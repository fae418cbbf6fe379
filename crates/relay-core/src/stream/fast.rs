//! The image check's fast path: one pass over the bytes, no serde.
//!
//! [`check`](super::check) is serde_json walking the image through visitors
//! (the grammar, stated once, in `Shape`/`Attr`). That walk re-tokenises
//! every image the runtime already scanned, and it was a quarter of the
//! forwarder's CPU per event. This module reads the same grammar straight
//! off the bytes.
//!
//! **Invariant:** [`count`] returns `Some(n)` only for text the serde check
//! accepts with the same `n`. Anything it is not sure of (a `\u` escape, an
//! escaped type tag or base64 string, a number, `null`, a stray byte, any
//! error at all) is `None`, and the caller asks the serde check, which
//! then gives the answer and the error. So this path can make the check
//! faster, never more permissive; its errors are the serde check's.

use base64::Engine as _;

use super::MAX_NESTING;

/// The number of attributes of `json` if it is certainly an item the serde
/// check accepts; `None` if not certain (see the module's invariant).
pub(super) fn count(json: &str) -> Option<usize> {
    let mut c = Cursor {
        b: json.as_bytes(),
        i: 0,
    };
    let n = c.item(0)?;
    c.ws();
    (c.i == c.b.len()).then_some(n)
}

/// A position in a text being read (also [`super::read`]'s).
pub(super) struct Cursor<'a> {
    pub(super) b: &'a [u8],
    pub(super) i: usize,
}

/// A string's content as it is in the text, and whether it held escapes.
pub(super) struct Str<'a> {
    pub(super) raw: &'a [u8],
    pub(super) escaped: bool,
}

/// What walks a text with a [`Cursor`]: the cursor itself, and
/// [`super::read`]'s reader, which keeps the text beside it.
pub(super) trait Walk<'a>: Sized {
    fn cursor(&mut self) -> &mut Cursor<'a>;

    /// `open element, … close` (an array or an object; `element` reads one
    /// entry, a name and its value in an object), after whitespace; the
    /// number of elements.
    fn list(
        &mut self,
        open: u8,
        close: u8,
        mut element: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<usize> {
        self.cursor().eat(open)?;
        if self.cursor().peek()? == close {
            self.cursor().i += 1;
            return Some(0);
        }
        let mut n = 0;
        loop {
            element(self)?;
            n += 1;
            let c = self.cursor();
            match c.peek()? {
                b',' => c.i += 1,
                b if b == close => {
                    c.i += 1;
                    return Some(n);
                }
                _ => return None,
            }
        }
    }
}

impl<'a> Walk<'a> for Cursor<'a> {
    fn cursor(&mut self) -> &mut Cursor<'a> {
        self
    }
}

impl<'a> Cursor<'a> {
    /// Skips JSON's whitespace (what serde_json skips).
    pub(super) fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// The next byte after whitespace, not consumed.
    pub(super) fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    /// Consumes `c` after whitespace, or is not sure.
    pub(super) fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// Consumes `word` exactly (after whitespace).
    pub(super) fn word(&mut self, word: &[u8]) -> Option<()> {
        self.ws();
        let end = self.i + word.len();
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    /// A string, quotes included. Escapes other than `\u` are valid in any
    /// string serde_json reads; `\u` (surrogates) and raw control
    /// characters are left to the serde check.
    pub(super) fn string(&mut self) -> Option<Str<'a>> {
        self.eat(b'"')?;
        let start = self.i;
        let mut escaped = false;
        loop {
            self.skip_plain();
            match *self.b.get(self.i)? {
                b'"' => {
                    let raw = &self.b[start..self.i];
                    self.i += 1;
                    return Some(Str { raw, escaped });
                }
                b'\\' => {
                    match self.b.get(self.i + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        _ => return None,
                    }
                    escaped = true;
                    self.i += 2;
                }
                _ => return None, // a control character
            }
        }
    }

    /// Moves past bytes that need no attention inside a string: not `"`,
    /// not `\`, not a control character. Eight bytes at a time (the
    /// classic "has a zero byte" test, per byte value); in the first eight
    /// that hold one, straight to it.
    pub(super) fn skip_plain(&mut self) {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        // Bit 7 of each byte equal to `v`. A borrow only runs upwards from
        // a byte that is flagged rightly, so the lowest flag is exact
        // (bytes above it may be flagged wrongly; they are not looked at).
        let equal = |w: u64, v: u8| {
            let x = w ^ (ONES * u64::from(v));
            x.wrapping_sub(ONES) & !x & HIGH
        };
        while let Some(chunk) = self.b.get(self.i..self.i + 8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            let w = u64::from_le_bytes(w);
            // Bytes below 0x20: their value minus 0x20 borrows into bit 7.
            let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
            let flags = control | equal(w, b'"') | equal(w, b'\\');
            if flags != 0 {
                // Little-endian: the lowest flag is the first such byte.
                self.i += (flags.trailing_zeros() / 8) as usize;
                return;
            }
            self.i += 8;
        }
        while let Some(&c) = self.b.get(self.i) {
            if c == b'"' || c == b'\\' || c < 0x20 {
                break;
            }
            self.i += 1;
        }
    }

    /// A `{name: attribute, …}` map, `depth` levels down; its length.
    pub(super) fn item(&mut self, depth: u32) -> Option<usize> {
        self.list(b'{', b'}', |c| {
            c.string()?;
            c.eat(b':')?;
            c.attr(depth)
        })
    }

    /// An attribute value: `{"TAG": value}`, exactly one known tag.
    fn attr(&mut self, depth: u32) -> Option<()> {
        self.eat(b'{')?;
        let tag = self.string()?;
        if tag.escaped {
            return None;
        }
        self.eat(b':')?;
        match tag.raw {
            b"S" | b"N" => {
                self.string()?;
            }
            b"BOOL" | b"NULL" => match self.peek()? {
                b't' => self.word(b"true")?,
                _ => self.word(b"false")?,
            },
            b"B" => self.base64()?,
            b"M" => {
                self.item(below(depth)?)?;
            }
            b"L" => {
                let depth = below(depth)?;
                self.array(|c| c.attr(depth))?;
            }
            b"SS" | b"NS" => self.array(|c| c.string().map(drop))?,
            b"BS" => self.array(Self::base64)?,
            _ => return None,
        }
        self.eat(b'}')
    }

    /// `[element, …]`.
    pub(super) fn array(&mut self, element: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.list(b'[', b']', element).map(drop)
    }

    /// A string that decodes as the serde check decodes binaries (standard
    /// base64), decoded into a buffer on the stack when it fits.
    fn base64(&mut self) -> Option<()> {
        let s = self.string()?;
        if s.escaped {
            return None;
        }
        let engine = &base64::engine::general_purpose::STANDARD;
        let mut out = [0u8; 384];
        let ok = if s.raw.len() <= 512 {
            engine.decode_slice(s.raw, &mut out).is_ok()
        } else {
            engine.decode(s.raw).is_ok()
        };
        ok.then_some(())
    }
}

/// The level below an `M` or `L` at `depth`, if DynamoDB allows one.
fn below(depth: u32) -> Option<u32> {
    (depth < MAX_NESTING).then_some(depth + 1)
}
