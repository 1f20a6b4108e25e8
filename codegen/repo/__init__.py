"""Repository-level code completion: a corpus of real repositories, RLCoder-style tasks, BM25 candidates."""
