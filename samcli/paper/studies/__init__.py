"""One module per paper study: its config dataclass, its run, its verdicts and its plots."""
