//! Minimal .npy (format 1.0/2.0) reading and writing of little-endian float32 arrays.

use std::path::Path;

/// Reads a C-order `<f4` array: (shape, values). Errors name the file and the problem.
pub fn read_f32(path: &Path) -> Result<(Vec<usize>, Vec<f32>), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses the bytes of a .npy file (see [`read_f32`]).
pub fn parse(bytes: &[u8]) -> Result<(Vec<usize>, Vec<f32>), String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (bad magic)".into());
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let header = bytes.get(start..start + header_len).ok_or("truncated .npy header")?;
    let header = std::str::from_utf8(header).map_err(|_| "the .npy header is not text")?;
    let Header { descr, fortran_order, shape } = Header::parse(header)?;
    if descr != "<f4" {
        return Err(format!("dtype '{descr}': expected float32 ('<f4')"));
    }
    if fortran_order {
        return Err("Fortran-order arrays are not supported; save with C order".into());
    }
    let bytes_needed = shape
        .iter()
        .try_fold(4usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} overflows the address space"))?;
    let data = &bytes[start + header_len..];
    if data.len() != bytes_needed {
        return Err(format!("shape {shape:?} needs {bytes_needed} data bytes, the file has {}", data.len()));
    }
    Ok((shape, data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()))
}

/// The header of a .npy file, read as the Python literal dict numpy writes:
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`.
#[derive(Debug, PartialEq)]
struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// A value of the header dict.
#[derive(Debug, PartialEq)]
enum Value {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
}

/// A tiny recursive-descent reader over the header text.
struct Reader<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Reader<'a> {
    fn skip_space(&mut self) {
        while self.text[self.pos..].starts_with([' ', '\t', '\n', '\r']) {
            self.pos += 1;
        }
    }

    /// Consumes `c` after optional whitespace, or says what was there instead.
    fn expect(&mut self, c: char) -> Result<(), String> {
        self.skip_space();
        if self.text[self.pos..].starts_with(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(format!("expected '{c}' at byte {} of the .npy header, found {:?}", self.pos, self.rest()))
        }
    }

    /// Consumes `c` if it comes next.
    fn eat(&mut self, c: char) -> bool {
        self.skip_space();
        let found = self.text[self.pos..].starts_with(c);
        if found {
            self.pos += 1;
        }
        found
    }

    /// A few characters of what is left, for messages.
    fn rest(&self) -> String {
        self.text[self.pos..].chars().take(12).collect()
    }

    fn string(&mut self) -> Result<String, String> {
        self.skip_space();
        let quote = match self.text[self.pos..].chars().next() {
            Some(q @ ('\'' | '"')) => q,
            _ => return Err(format!("expected a quoted string at byte {} of the .npy header", self.pos)),
        };
        let start = self.pos + 1;
        let len = self.text[start..].find(quote).ok_or("unterminated string in the .npy header")?;
        let s = &self.text[start..start + len];
        if s.contains('\\') {
            return Err(format!("escape sequences are not valid in a .npy header string: {s:?}"));
        }
        self.pos = start + len + 1;
        Ok(s.to_string())
    }

    fn value(&mut self) -> Result<Value, String> {
        self.skip_space();
        let rest = &self.text[self.pos..];
        if rest.starts_with(['\'', '"']) {
            return self.string().map(Value::Str);
        }
        for (word, b) in [("True", true), ("False", false)] {
            if rest.starts_with(word) {
                self.pos += word.len();
                return Ok(Value::Bool(b));
            }
        }
        if rest.starts_with('(') {
            self.pos += 1;
            let mut dims = Vec::new();
            loop {
                if self.eat(')') {
                    break;
                }
                dims.push(self.dim()?);
                // A 1-tuple is written (n,): after a dim, ',' or ')'.
                if !self.eat(',') {
                    self.expect(')')?;
                    break;
                }
            }
            return Ok(Value::Tuple(dims));
        }
        Err(format!("unexpected {:?} in the .npy header", self.rest()))
    }

    fn dim(&mut self) -> Result<usize, String> {
        self.skip_space();
        let digits = self.text[self.pos..].chars().take_while(char::is_ascii_digit).count();
        let text = &self.text[self.pos..self.pos + digits];
        self.pos += digits;
        text.parse().map_err(|_| {
            format!(
                "malformed shape dim {:?} in the .npy header",
                if text.is_empty() { self.rest() } else { text.to_string() }
            )
        })
    }
}

impl Header {
    fn parse(text: &str) -> Result<Header, String> {
        let mut r = Reader { text, pos: 0 };
        r.expect('{')?;
        let (mut descr, mut fortran, mut shape) = (None, None, None);
        loop {
            if r.eat('}') {
                break;
            }
            let key = r.string()?;
            r.expect(':')?;
            let value = r.value()?;
            let slot_taken = match (key.as_str(), value) {
                ("descr", Value::Str(s)) => descr.replace(s).is_some(),
                ("fortran_order", Value::Bool(b)) => fortran.replace(b).is_some(),
                ("shape", Value::Tuple(t)) => shape.replace(t).is_some(),
                ("descr" | "fortran_order" | "shape", v) => {
                    return Err(format!("the .npy header's '{key}' has the wrong type: {v:?}"))
                }
                _ => return Err(format!("unknown key '{key}' in the .npy header")),
            };
            if slot_taken {
                return Err(format!("the .npy header repeats '{key}'"));
            }
            if !r.eat(',') {
                r.expect('}')?;
                break;
            }
        }
        r.skip_space();
        if r.pos != text.len() {
            return Err(format!("unexpected {:?} after the .npy header dict", r.rest()));
        }
        let missing = |k: &str| format!("the .npy header has no '{k}'");
        Ok(Header {
            descr: descr.ok_or_else(|| missing("descr"))?,
            fortran_order: fortran.ok_or_else(|| missing("fortran_order"))?,
            shape: shape.ok_or_else(|| missing("shape"))?,
        })
    }
}

/// Writes a C-order `<f4` array.
pub fn write_f32(path: &Path, shape: &[usize], values: &[f32]) -> Result<(), String> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape_text = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut out = preamble(&format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}"));
    out.reserve(values.len() * 4);
    values.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    std::fs::write(path, out).map_err(|e| format!("{}: {e}", path.display()))
}

/// Magic, version 1.0, header length and the header `dict`, padded with spaces and a
/// newline so that the data starts at a multiple of 64 bytes.
fn preamble(dict: &str) -> Vec<u8> {
    let mut header = dict.to_string();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let dir = std::env::temp_dir().join(format!("convkit-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.npy");
        write_f32(&p, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.5]).unwrap();
        assert_eq!(read_f32(&p).unwrap(), (vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.5]));
        let mut bytes = std::fs::read(&p).unwrap();
        let at = bytes.windows(4).position(|w| w == b"<f4'").unwrap();
        bytes[at + 1..at + 3].copy_from_slice(b"f8");
        std::fs::write(&p, &bytes).unwrap();
        assert!(read_f32(&p).unwrap_err().contains("expected float32"));
        std::fs::write(&p, b"hello").unwrap();
        assert!(read_f32(&p).unwrap_err().contains("not a .npy"));
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A file with header `dict` and `data_bytes` zero bytes of data.
    fn with_header(dict: &str, data_bytes: usize) -> Vec<u8> {
        let mut out = preamble(dict);
        out.extend(std::iter::repeat_n(0u8, data_bytes));
        out
    }

    #[test]
    fn headers_are_parsed_not_searched() {
        let ok = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
        assert_eq!(parse(&with_header(ok, 24)).unwrap().0, vec![2, 3]);
        assert_eq!(
            parse(&with_header("{'shape': (4,), 'descr': '<f4', 'fortran_order': False}", 16)).unwrap().0,
            vec![4]
        );
        assert_eq!(
            parse(&with_header("{'descr': '<f4', 'fortran_order': False, 'shape': ()}", 4)).unwrap().0,
            Vec::<usize>::new()
        );
        for (dict, want) in [
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (2, x), }", "malformed shape dim"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, }", "malformed shape dim"),
            ("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (2, 3), }", "unexpected"),
            ("{'descr': '<f4', 'fortran_order': 'False', 'shape': (2, 3), }", "wrong type"),
            ("{'x': \"'descr': '<f4'\", 'descr': '<f8', 'fortran_order': False, 'shape': (1,)}", "unknown key 'x'"),
            ("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}", "repeats 'descr'"),
            ("{'descr': '<f4', 'shape': (1,)}", "no 'fortran_order'"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} junk", "after the .npy header dict"),
            ("{'descr': '<f8', 'fortran_order': False, 'shape': (1,)}", "expected float32"),
            ("{'descr': '<f4', 'fortran_order': True, 'shape': (1,)}", "Fortran-order"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}", "malformed shape dim"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296)}", "overflows"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (3,)}", "needs 12 data bytes"),
        ] {
            let e = parse(&with_header(dict, 8)).unwrap_err();
            assert!(e.contains(want), "{dict}: {e}");
        }
    }
}
