//! Card layout derived from a board config.
