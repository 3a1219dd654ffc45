"""Building blocks of inference that are not networks: windows, looping, pasting."""
