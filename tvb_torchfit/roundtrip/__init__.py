"""The round trip into TVB: fitted values written back into TVB simulators (``writeback``), TVB's own
integrators run at them (``validation``), and TVB against the twin side by side (``compare``)."""
