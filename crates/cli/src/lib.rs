//! The parsers and image preprocessing behind the `convkit` binary, as a library so that
//! the fuzz targets and tests reach them.

#![warn(missing_docs)]

pub mod images;
pub mod npy;
