//! What `convkit classify` and `convkit preprocess` read: the image files their arguments
//! name, preprocessed in parallel.

use convkit_preprocess::Preprocess;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// The files of image types `convkit_preprocess::preprocess` reads, by extension (any case).
const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// An argument of `classify` that names no image to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadInput {
    /// The argument.
    pub arg: PathBuf,
    /// What is wrong, naming the argument.
    pub message: String,
}

/// The image files the arguments of `classify` name, in order: a file as it is (a missing
/// one is reported when it is read), a directory's .jpg, .jpeg and .png files sorted by
/// name, and a glob pattern's matches ("photos/*.jpg", quoted so that the shell leaves it
/// alone) sorted by name. An argument that names nothing to read is an error naming it.
pub fn expand_inputs(args: &[PathBuf]) -> Vec<Result<PathBuf, BadInput>> {
    let mut out = Vec::new();
    for arg in args {
        let shown = arg.display();
        let bad = |message: String| Err(BadInput { arg: arg.clone(), message });
        if arg.is_dir() {
            let entries = match std::fs::read_dir(arg) {
                Ok(entries) => entries,
                Err(e) => {
                    out.push(bad(format!("{shown}: cannot list the directory: {e}")));
                    continue;
                }
            };
            let mut files: Vec<PathBuf> =
                entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file() && is_image_name(p)).collect();
            if files.is_empty() {
                out.push(bad(format!("{shown}: the directory holds no .jpg, .jpeg or .png file")));
            }
            files.sort();
            out.extend(files.into_iter().map(Ok));
        } else if !arg.exists() && arg.to_str().is_some_and(|s| s.contains(['*', '?', '['])) {
            let pattern = arg.to_string_lossy();
            match glob::glob(&pattern) {
                Err(e) => out.push(bad(format!("{shown}: not a valid glob pattern: {e}"))),
                Ok(paths) => {
                    let mut files: Vec<PathBuf> = paths.filter_map(Result::ok).filter(|p| p.is_file()).collect();
                    if files.is_empty() {
                        out.push(bad(format!("{shown}: no file matches the pattern")));
                    }
                    files.sort();
                    out.extend(files.into_iter().map(Ok));
                }
            }
        } else {
            out.push(Ok(arg.clone()));
        }
    }
    out
}

/// Each input preprocessed (in parallel on the current rayon pool), in order: the name to
/// show it by, and its 3 x 224 x 224 values or what is wrong with it (naming the file).
pub fn preprocess_inputs(
    inputs: &[Result<PathBuf, BadInput>],
    mode: Preprocess,
) -> Vec<(String, Result<Vec<f32>, String>)> {
    inputs
        .par_iter()
        .map(|input| match input {
            Ok(path) => {
                (path.display().to_string(), convkit_preprocess::preprocess(path, mode).map_err(|e| e.to_string()))
            }
            Err(bad) => (bad.arg.display().to_string(), Err(bad.message.clone())),
        })
        .collect()
}

fn is_image_name(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}
