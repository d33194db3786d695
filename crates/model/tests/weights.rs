//! Weight files that would give silent garbage are refused with an error naming the key.

use convkit_model::{ResNetSpec, Variant, Weights};

fn spec() -> ResNetSpec {
    ResNetSpec::new(Variant::D, [1, 1, 1, 1])
}

/// The seeded tensors with `edit` applied to `key`.
fn edited(key: &str, edit: impl Fn(&mut Vec<f32>)) -> Result<Weights, String> {
    let mut tensors = Weights::seeded(spec(), 1).tensors().clone();
    edit(&mut tensors.get_mut(key).expect("key").data);
    Weights::from_tensors(spec(), tensors).map_err(|e| e.to_string())
}

#[test]
fn non_finite_weights_are_refused() {
    for (key, value) in
        [("conv1.0.weight", f32::NAN), ("fc.weight", f32::INFINITY), ("bn1.running_mean", -f32::INFINITY)]
    {
        let e = edited(key, |d| d[5] = value).unwrap_err();
        assert!(e.contains(&format!("key '{key}' holds")) && e.contains("at index 5"), "{e}");
    }
}

#[test]
fn non_positive_variance_is_refused() {
    let e = edited("layer1.0.bn2.running_var", |d| d[3] = -1.0).unwrap_err();
    assert!(
        e.contains("'layer1.0.bn2.running_var'") && e.contains("index 3") && e.contains("running_var + eps"),
        "{e}"
    );
    let e = edited("layer1.0.bn2.running_var", |d| d[0] = f32::NAN).unwrap_err();
    assert!(e.contains("must be finite"), "{e}");
    // A variance of 0 is valid: eps keeps the division finite.
    assert!(edited("layer1.0.bn2.running_var", |d| d[0] = 0.0).is_ok());
}

#[test]
fn duplicate_safetensors_keys_are_refused() {
    let bytes = Weights::seeded(spec(), 1).to_safetensors_bytes().unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + len]).unwrap();
    // Name one tensor again, pointing at the same bytes.
    let first = header.find("\"fc.bias\"").expect("fc.bias in the header");
    let entry_end = first + header[first..].find('}').unwrap() + 1;
    let entry = &header[first..entry_end];
    let doubled = format!("{{{entry},{}", &header[1..]);
    let mut out = (doubled.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(doubled.as_bytes());
    out.extend_from_slice(&bytes[8 + len..]);
    let e = Weights::from_safetensors_bytes(spec(), &out).unwrap_err().to_string();
    assert!(e.contains("names 'fc.bias' twice"), "{e}");
    // The untouched file still loads.
    assert!(Weights::from_safetensors_bytes(spec(), &bytes).is_ok());
}
