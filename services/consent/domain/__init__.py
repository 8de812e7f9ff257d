"""The consent service's domain: the consent ledger, sharing decisions and retention. Pure: no I/O."""
