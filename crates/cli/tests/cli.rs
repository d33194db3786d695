//! The `convkit` binary end to end: export, run, classify, and one-line errors.

use convkit_cli::npy;
use convkit_model::{ResNet, ResNetSpec, Variant, Weights, Workspace};
use convkit_tensor::{Layout, Shape, TensorView};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn convkit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_convkit")).args(args).output().expect("run convkit")
}

/// Fails unless the command failed with one `convkit: error:` line naming `needle`.
fn assert_one_line_error(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("convkit: error:") && err.contains(needle), "want '{needle}' in: {err}");
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("convkit-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn export_run_classify_and_errors() {
    let dir = temp_dir("e2e");
    let weights = dir.join("d.safetensors");
    let out = convkit(&["export", "--variant", "d", "--seed", "3", "-o", s(&weights)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // run: logits equal the library's forward on the same weights and input.
    let shape = Shape::new(2, 3, 64, 48);
    let input: Vec<f32> = (0..shape.numel().unwrap()).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
    let x = dir.join("x.npy");
    npy::write_f32(&x, &[2, 3, 64, 48], &input).unwrap();
    let logits = dir.join("logits.npy");
    let out = convkit(&["run", "--variant", "d", "--weights", s(&weights), "--input", s(&x), "--output", s(&logits)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (got_shape, got) = npy::read_f32(&logits).unwrap();
    assert_eq!(got_shape, vec![2, 1000]);
    let model = ResNet::new(&Weights::load(ResNetSpec::resnet50(Variant::D), &weights).unwrap()).unwrap();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let mut ws = Workspace::new();
    let view = TensorView::new(shape, Layout::Nchw, &input).unwrap();
    let want = pool.install(|| model.forward(view, &mut ws).unwrap().to_vec());
    assert_eq!(got, want);

    // classify: five classes per image.
    let img = dir.join("img.png");
    image::RgbImage::from_fn(320, 240, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])).save(&img).unwrap();
    let out = convkit(&["classify", s(&img), s(&img), "--variant", "d", "--weights", s(&weights)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().filter(|l| l.contains('%')).count(), 10, "{text}");

    // errors, one line each
    assert_one_line_error(
        &convkit(&["run", "--variant", "e", "--weights", "w", "--input", "x", "--output", "y"]),
        "unknown variant 'e'",
    );
    assert_one_line_error(&convkit(&["bench", "--variant", "a,z"]), "unknown variant 'z'");
    let missing = dir.join("missing.safetensors");
    let out = convkit(&["run", "--weights", s(&missing), "--input", s(&x), "--output", s(&logits)]);
    assert_one_line_error(&out, "missing.safetensors");
    let out = convkit(&["run", "--variant", "a", "--weights", s(&weights), "--input", s(&x), "--output", s(&logits)]);
    assert_one_line_error(&out, "conv1.weight");
    let rank3 = dir.join("rank3.npy");
    npy::write_f32(&rank3, &[3, 4, 4], &[0.0; 48]).unwrap();
    let out = convkit(&["run", "--weights", s(&weights), "--input", s(&rank3), "--output", s(&logits)]);
    assert_one_line_error(&out, "expected rank 4");
    let f64_npy = dir.join("f64.npy");
    let mut bytes = std::fs::read(&x).unwrap();
    let at = bytes.windows(4).position(|w| w == b"<f4'").unwrap();
    bytes[at + 1..at + 3].copy_from_slice(b"f8");
    std::fs::write(&f64_npy, bytes).unwrap();
    let out = convkit(&["run", "--weights", s(&weights), "--input", s(&f64_npy), "--output", s(&logits)]);
    assert_one_line_error(&out, "expected float32");
    let junk = dir.join("junk.jpg");
    std::fs::write(&junk, b"no").unwrap();
    assert_one_line_error(&convkit(&["classify", s(&junk), "--weights", s(&weights)]), "junk.jpg");

    // classify's inputs: a directory, a missing file, a very thin image, a bad image among
    // good ones (the good ones are still classified).
    assert_one_line_error(&convkit(&["classify", s(&dir), "--weights", s(&weights)]), "is a directory");
    let nowhere = dir.join("nowhere.png");
    assert_one_line_error(
        &convkit(&["classify", s(&nowhere), "--weights", s(&weights)]),
        "nowhere.png: cannot read the file",
    );
    let bomb = dir.join("bomb.png");
    image::GrayImage::new(65535, 1).save(&bomb).unwrap();
    assert!(std::fs::metadata(&bomb).unwrap().len() < 4096, "a small file");
    assert_one_line_error(&convkit(&["classify", s(&bomb), "--weights", s(&weights)]), "exceeds limit");
    let thin = dir.join("thin.png");
    image::GrayImage::new(16000, 1).save(&thin).unwrap();
    assert_one_line_error(&convkit(&["classify", s(&thin), "--weights", s(&weights)]), "too elongated");
    let out = convkit(&["classify", s(&img), s(&junk), s(&img), "--variant", "d", "--weights", s(&weights)]);
    let (text, err) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success() && !err.contains("panicked"), "{err}");
    assert_eq!(text.lines().filter(|l| l.contains('%')).count(), 10, "{text}");
    assert!(err.contains("junk.jpg: cannot decode") && err.contains("1 of 3 images could not be classified"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn info_and_small_bench() {
    let out = convkit(&["info"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("25557032") && text.contains("25576264"), "{text}");
    let json = |args: &[&str]| -> serde_json::Value {
        let out = convkit(args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    };
    let bench = json(&["bench", "--variant", "a,d", "--size", "64", "--iters", "1", "--warmup", "0", "--json"]);
    assert_eq!(bench[1]["variant"], "D");
    assert!(bench[0]["median_ms"].as_f64().unwrap() > 0.0, "{bench}");
    // A zero peak makes the share infinite: valid JSON (null), where "inf" was printed.
    let bench =
        json(&["bench", "--variant", "a", "--size", "32", "--iters", "1", "--warmup", "0", "--json", "--peak", "0"]);
    assert!(bench[0]["peak_share"].is_null(), "{bench}");
    let profile = json(&["profile", "--variant", "b", "--size", "64", "--iters", "1", "--warmup", "0", "--json"]);
    assert!(profile["by_kind"].as_array().is_some_and(|k| !k.is_empty()), "{profile}");
}

/// A closed stdout ends the program quietly (no panic message), killed by SIGPIPE as
/// other Unix tools are.
#[cfg(unix)]
#[test]
fn closed_stdout_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    for args in [&["info"][..], &["bench", "--help"][..]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_convkit")).args(args).stdout(writer).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.is_empty(), "{args:?}: {err}");
        assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{args:?}: {:?}", out.status);
    }
}

/// Sizes from the command line that cannot be met are one-line errors, not aborts.
#[test]
fn impossible_sizes_are_errors() {
    assert_one_line_error(&convkit(&["bench", "--variant", "a", "--threads", "100000"]), "between 1 and 1024");
    assert_one_line_error(&convkit(&["info", "--size", "4294967296"]), "overflow");
    let out = convkit(&["bench", "--variant", "a", "--batch", "100000", "--iters", "1", "--warmup", "0"]);
    assert_one_line_error(&out, "out of memory: could not allocate");
    let out = convkit(&["bench", "--variant", "a", "--size", "100000", "--iters", "1", "--warmup", "0"]);
    assert_one_line_error(&out, "out of memory: could not allocate");
    // A valid 2048x2048 input under a 600 MB address-space limit: the weights fit, the
    // arena does not.
    #[cfg(target_os = "linux")]
    {
        let script = format!(
            "ulimit -v 600000 && exec '{}' bench --variant d --size 2048 --iters 1 --warmup 0",
            env!("CARGO_BIN_EXE_convkit")
        );
        let out = Command::new("sh").args(["-c", &script]).output().unwrap();
        assert_one_line_error(&out, "out of memory: could not allocate");
    }
}
