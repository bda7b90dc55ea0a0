pub mod fmp4;
pub mod playlist;
pub mod segmenter;
pub mod ts;
