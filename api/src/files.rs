//! The files a worker may transfer: a model folder's and a checkpoint's. The server serves and
//! accepts these names only.

/// Files a model folder is made of (the ones that exist are transferred, with the shards a
/// `model.safetensors.index.json` names; the worker's `transfer::model_files_in` lists them).
pub const MODEL_FILES: &[&str] = &[
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
];

/// Files of a checkpoint: the model folder plus optimizer state and trainer state.
pub const CHECKPOINT_FILES: &[&str] = &[
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "optimizer.safetensors",
    "trainer_state.json",
];
