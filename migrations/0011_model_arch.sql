-- Models the engine's own Qwen2 does not run: another architecture (Qwen3, Llama) or quantized
-- weights (GGUF). They are generation-only teachers, run through candle-transformers.
ALTER TABLE models ADD COLUMN arch TEXT NOT NULL DEFAULT 'qwen2'
    CHECK (arch IN ('qwen2', 'qwen3', 'llama'));
ALTER TABLE models ADD COLUMN format TEXT NOT NULL DEFAULT 'safetensors'
    CHECK (format IN ('safetensors', 'gguf'));
