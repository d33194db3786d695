//! Minimal .npy (format 1.0/2.0) reading and writing of little-endian float32 arrays.

use std::path::Path;

/// Reads a C-order `<f4` array: (shape, values). Errors name the file and the problem.
pub fn read_f32(path: &Path) -> Result<(Vec<usize>, Vec<f32>), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn parse(bytes: &[u8]) -> Result<(Vec<usize>, Vec<f32>), String> {
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
    let field = |name: &str| -> Result<&str, String> {
        let key = format!("'{name}':");
        let at = header.find(&key).ok_or(format!("the .npy header has no '{name}'"))?;
        Ok(header[at + key.len()..].trim_start())
    };
    let descr = field("descr")?;
    if !descr.starts_with("'<f4'") {
        let got = descr.split(',').next().unwrap_or("?");
        return Err(format!("dtype {got}: expected float32 ('<f4')"));
    }
    if field("fortran_order")?.starts_with("True") {
        return Err("Fortran-order arrays are not supported; save with C order".into());
    }
    let shape_text = field("shape")?;
    let close = shape_text.find(')').ok_or("malformed shape in .npy header")?;
    let shape = shape_text[1..close]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| format!("malformed shape dim '{s}'")))
        .collect::<Result<Vec<_>, _>>()?;
    let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("shape overflows")?;
    let data = &bytes[start + header_len..];
    if data.len() != count * 4 {
        return Err(format!("shape {shape:?} needs {} data bytes, the file has {}", count * 4, data.len()));
    }
    Ok((shape, data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()))
}

/// Writes a C-order `<f4` array.
pub fn write_f32(path: &Path, shape: &[usize], values: &[f32]) -> Result<(), String> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape_text = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}");
    // Pad so that magic (6) + version (2) + length (2) + header + '\n' is a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + values.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    values.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    std::fs::write(path, out).map_err(|e| format!("{}: {e}", path.display()))
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
}
