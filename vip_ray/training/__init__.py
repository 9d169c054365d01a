"""Training of pool members: the KD loss, the phase loop and the Tune trainable."""
