"""erasekit.text: a text world with ground truth, LLM unlearning, MUSE evaluation and attacks."""
