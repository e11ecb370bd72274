//! Board configuration files (board-configs/<board>.toml).
