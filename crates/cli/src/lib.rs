//! The parsers and input expansion behind the `convkit` binary, as a library so that the
//! fuzz targets and tests reach them (image preprocessing is `convkit_preprocess`).

#![warn(missing_docs)]

pub mod images;
pub mod npy;
