pub mod fmp4;
pub mod names;
pub mod output;
pub mod playlist;
pub mod segmenter;
pub mod ts;
