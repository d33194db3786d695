//! The `convkit` binary end to end: export, run, classify, and one-line errors.

use convkit_cli::npy;
use convkit_model::{ModelConfig, ResNetSpec, Variant, Weights, Workspace};
use convkit_tensor::{Layout, Shape, TensorView};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn convkit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_convkit")).args(args).output().expect("run convkit")
}

/// Fails unless the command failed with one `convkit: error:` line naming `needle`
/// (warnings may come before it).
fn assert_one_line_error(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let errors: Vec<&str> = err.lines().filter(|l| !l.starts_with("convkit: warning:")).collect();
    assert_eq!(errors.len(), 1, "one line: {err}");
    assert!(errors[0].starts_with("convkit: error:") && errors[0].contains(needle), "want '{needle}' in: {err}");
}

/// Fails unless clap refused the command line (exit status 2) with `needle` in its message.
fn assert_usage_error(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "usage error expected: {err}");
    assert!(!err.contains("panicked") && err.contains(needle), "want '{needle}' in: {err}");
}

/// The stdout of a successful command, parsed as JSON.
fn json(args: &[&str]) -> serde_json::Value {
    let out = convkit(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
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
    let (model, _) = ModelConfig::new(ResNetSpec::resnet50(Variant::D)).load(&weights).unwrap();
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

    // errors, one line each; clap refuses values that are not among the choices
    let out = convkit(&["run", "--variant", "e", "--weights", "w", "--input", "x", "--output", "y"]);
    assert_usage_error(&out, "possible values: a, b, c, d");
    assert_usage_error(&convkit(&["bench", "--variant", "a,z"]), "invalid value 'z'");
    assert_usage_error(&convkit(&["bench", "--depth", "34"]), "possible values: 50, 101, 152");
    let missing = dir.join("missing.safetensors");
    let out = convkit(&["run", "--weights", s(&missing), "--input", s(&x), "--output", s(&logits)]);
    assert_one_line_error(&out, "missing.safetensors");
    let out = convkit(&["run", "--variant", "a", "--weights", s(&weights), "--input", s(&x), "--output", s(&logits)]);
    assert_one_line_error(&out, "holds ResNet-50-D (its metadata says so), not the requested ResNet-50-A");
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

    // classify's inputs: a missing file, a very thin image, a bad image among good ones
    // (the good ones are still classified).
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

/// classify over a directory and a glob, with a missing and a corrupt image among good
/// ones: every good image classified, every bad one named, the exit status non-zero.
#[test]
fn classify_directories_globs_and_bad_images() {
    let dir = temp_dir("classify");
    let weights = dir.join("c.safetensors");
    assert!(convkit(&["export", "--variant", "c", "-o", s(&weights)]).status.success());
    let photos = dir.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for (name, colour) in [("one.png", [200, 10, 10]), ("two.JPG", [10, 200, 10]), ("three.jpeg", [10, 10, 200])] {
        let img = image::RgbImage::from_fn(300, 260, |x, y| image::Rgb([colour[0], (x % 256) as u8, (y % 256) as u8]));
        img.save_with_format(
            photos.join(name),
            if name.ends_with("png") { image::ImageFormat::Png } else { image::ImageFormat::Jpeg },
        )
        .unwrap();
    }
    std::fs::write(photos.join("notes.txt"), "not an image, not listed").unwrap();
    std::fs::write(photos.join("corrupt.png"), b"\x89PNG\r\n\x1a\n but nothing else").unwrap();
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let pattern = format!("{}/t*", photos.display());
    let missing = photos.join("missing.png");
    let out = convkit(&[
        "classify",
        s(&photos),
        &pattern,
        s(&missing),
        s(&empty),
        "--variant",
        "c",
        "--weights",
        s(&weights),
        "--batch",
        "2",
        "--top",
        "3",
        "--json",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && !err.contains("panicked"), "{err}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let files: Vec<&str> = report["results"].as_array().unwrap().iter().map(|r| r["file"].as_str().unwrap()).collect();
    let names: Vec<&str> = files.iter().map(|f| f.rsplit('/').next().unwrap()).collect();
    // The directory's images by name, then the glob's matches (three.jpeg, two.JPG).
    assert_eq!(names, ["one.png", "three.jpeg", "two.JPG", "three.jpeg", "two.JPG"], "{report}");
    for r in report["results"].as_array().unwrap() {
        assert_eq!(r["top"].as_array().unwrap().len(), 3);
        let p: f64 = r["top"].as_array().unwrap().iter().map(|c| c["probability"].as_f64().unwrap()).sum();
        assert!(p > 0.0 && p <= 1.0 + 1e-6);
    }
    let failed: Vec<&str> = report["errors"].as_array().unwrap().iter().map(|e| e["error"].as_str().unwrap()).collect();
    assert_eq!(failed.len(), 3, "{report}");
    assert!(failed.iter().any(|e| e.contains("corrupt.png: cannot decode")), "{failed:?}");
    assert!(failed.iter().any(|e| e.contains("missing.png: cannot read the file")), "{failed:?}");
    assert!(failed.iter().any(|e| e.contains("empty: the directory holds no")), "{failed:?}");
    assert!(err.contains("3 of 8 images could not be classified"), "{err}");
    assert_eq!(report["seeded"], 0, "{report}");
    assert_eq!(report["preprocess"], "timm", "C takes timm's preprocessing: {report}");
    assert!(err.contains("convkit: warning:") && err.contains("seeded random weights"), "{err}");
    let out =
        convkit(&["classify", &format!("{}/*.gif", photos.display()), "--variant", "c", "--weights", s(&weights)]);
    assert_one_line_error(&out, "no file matches the pattern");
    std::fs::remove_dir_all(&dir).ok();
}

/// Weights carry their variant and depth: a file of another variant or depth is refused
/// by name; A and B files without metadata load as either, with a warning that says so.
#[test]
fn weights_of_another_network_are_named() {
    let dir = temp_dir("meta");
    let b = dir.join("b.safetensors");
    let export = json(&["export", "--variant", "b", "--seed", "1", "-o", s(&b), "--json"]);
    assert_eq!((export["variant"].as_str(), export["depth"].as_u64()), (Some("B"), Some(50)), "{export}");
    let img = dir.join("img.png");
    image::RgbImage::from_pixel(256, 256, image::Rgb([90, 120, 200])).save(&img).unwrap();
    let out = convkit(&["classify", s(&img), "--variant", "a", "--weights", s(&b)]);
    assert_one_line_error(&out, "the file holds ResNet-50-B (its metadata says so), not the requested ResNet-50-A");

    // The same tensors without metadata, as torchvision's converted files are: A loads them
    // and says A and B cannot be told apart.
    let plain = dir.join("plain.safetensors");
    let weights = Weights::load(ResNetSpec::resnet50(Variant::B), &b).unwrap();
    write_without_metadata(&weights, &plain);
    let out = convkit(&["classify", s(&img), "--variant", "a", "--weights", s(&plain)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("A and B have the same keys and shapes"), "{err}");
    assert!(!err.contains("seeded"), "no metadata, no seed: {err}");

    // Depth: by metadata, and by the keys of a file without it.
    let deep = dir.join("d101.safetensors");
    assert!(convkit(&["export", "--variant", "d", "--depth", "101", "-o", s(&deep)]).status.success());
    let x = dir.join("x.npy");
    npy::write_f32(&x, &[1, 3, 32, 32], &[0.5; 3 * 32 * 32]).unwrap();
    let y = dir.join("y.npy");
    let out = convkit(&["run", "--variant", "d", "--weights", s(&deep), "--input", s(&x), "--output", s(&y)]);
    assert_one_line_error(&out, "holds ResNet-101-D (its metadata says so), not the requested ResNet-50-D");
    let weights = Weights::load(ResNetSpec::resnet101(Variant::D), &deep).unwrap();
    write_without_metadata(&weights, &deep);
    let out = convkit(&["run", "--variant", "d", "--weights", s(&deep), "--input", s(&x), "--output", s(&y)]);
    assert_one_line_error(
        &out,
        "holds ResNet-101-D weights (by their keys and shapes), not the requested ResNet-50-D (pass --depth 101)",
    );
    let run = json(&[
        "run",
        "--variant",
        "d",
        "--depth",
        "101",
        "--weights",
        s(&deep),
        "--input",
        s(&x),
        "--output",
        s(&y),
        "--json",
    ]);
    assert_eq!(run["network"], "ResNet-101-D", "{run}");
    assert_eq!(run["output_shape"], serde_json::json!([1, 1000]), "{run}");
    std::fs::remove_dir_all(&dir).ok();
}

/// The tensors of `weights` as a safetensors file with no metadata.
fn write_without_metadata(weights: &Weights, path: &Path) {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = weights
        .tensors()
        .iter()
        .map(|(k, t)| (k.clone(), t.shape.clone(), t.data.iter().flat_map(|v| v.to_le_bytes()).collect()))
        .collect();
    let views = bytes.iter().map(|(k, shape, b)| {
        (k.as_str(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b).unwrap())
    });
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

#[test]
fn info_and_small_bench() {
    let out = convkit(&["info"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("25557032") && text.contains("25576264"), "{text}");
    let info = json(&["info", "--json"]);
    assert_eq!(info["variants"][3]["params"], 25576264, "{info}");
    assert!(info["isa"].is_string() && info["cpu"].is_string(), "{info}");
    let bench = json(&["bench", "--variant", "a,d", "--size", "64", "--iters", "2", "--warmup", "0", "--json"]);
    let rows = &bench["rows"];
    assert_eq!(rows[1]["variant"], "D");
    assert!(rows[0]["median_ms"].as_f64().unwrap() > 0.0, "{bench}");
    assert_eq!(rows[0]["time_over_a"], 1.0, "{bench}");
    assert_eq!(bench["convkit"], env!("CARGO_PKG_VERSION"), "{bench}");
    assert!(bench["isa"].is_string() && bench["cpu"].is_string(), "{bench}");
    let threads = std::thread::available_parallelism().unwrap().get();
    assert_eq!(bench["threads"], threads, "--threads defaults to the machine's cores: {bench}");
    // A zero peak makes the share infinite: valid JSON (null), where "inf" was printed.
    let bench =
        json(&["bench", "--variant", "a", "--size", "32", "--iters", "1", "--warmup", "0", "--json", "--peak", "0"]);
    assert!(bench["rows"][0]["peak_share"].is_null(), "{bench}");
    let bench = json(&[
        "bench",
        "--variant",
        "b",
        "--size",
        "32",
        "--iters",
        "1",
        "--warmup",
        "0",
        "--json",
        "--precision",
        "f32,bf16",
        "--kxk",
        "auto,direct",
    ]);
    assert_eq!(bench["rows"].as_array().unwrap().len(), 4, "{bench}");
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

/// `preprocess` writes the tensor classify feeds the network: the images that read, in
/// order, each equal to the library's preprocessing; a bad image is named and the exit
/// status says so; `run` takes the tensor as it is.
#[test]
fn preprocess_writes_what_classify_feeds_the_network() {
    let dir = temp_dir("preprocess");
    let photos = dir.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for (name, w, h) in [("a.png", 300, 260), ("b.jpg", 260, 400)] {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 90]));
        img.save(photos.join(name)).unwrap();
    }
    std::fs::write(photos.join("c.png"), b"\x89PNG\r\n\x1a\n but nothing else").unwrap();
    let out_npy = dir.join("x.npy");
    let out = convkit(&["preprocess", s(&photos), "--preprocess", "torchvision", "-o", s(&out_npy), "--json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && !err.contains("panicked"), "one image is bad: {err}");
    assert!(err.contains("c.png: cannot decode") && err.contains("1 of 3 images could not be read"), "{err}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(report["shape"], serde_json::json!([2, 3, 224, 224]), "{report}");
    assert_eq!(report["errors"].as_array().unwrap().len(), 1, "{report}");
    let (shape, x) = npy::read_f32(&out_npy).unwrap();
    assert_eq!(shape, [2, 3, 224, 224]);
    for (i, name) in ["a.png", "b.jpg"].iter().enumerate() {
        let want = convkit_preprocess::preprocess(&photos.join(name), convkit_preprocess::Preprocess::Torchvision);
        assert_eq!(&x[i * 3 * 224 * 224..(i + 1) * 3 * 224 * 224], &want.unwrap()[..], "{name}");
    }
    let weights = dir.join("d.safetensors");
    assert!(convkit(&["export", "--variant", "d", "-o", s(&weights)]).status.success());
    let logits = dir.join("logits.npy");
    let run = convkit(&["run", "--weights", s(&weights), "--input", s(&out_npy), "--output", s(&logits)]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(npy::read_f32(&logits).unwrap().0, [2, 1000]);
    // Nothing readable: nothing written, one error line.
    let none = dir.join("none.npy");
    let out = convkit(&["preprocess", s(&photos.join("c.png")), "-o", s(&none)]);
    assert!(!out.status.success() && !none.exists());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing written"));
    assert_usage_error(&convkit(&["preprocess", s(&photos), "--preprocess", "keras", "-o", s(&none)]), "keras");
    std::fs::remove_dir_all(&dir).ok();
}
