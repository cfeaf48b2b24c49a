//! Still's training engine (filled in by the engine issue).
