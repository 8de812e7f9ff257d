"""The audit ledger's pure core: canonical entries, the facts they record, how a chain and its
signed checkpoints are verified. No I/O: the same code runs in the service, the CLI and a DPO's
offline check."""
