pub mod kafka;
pub mod security;
