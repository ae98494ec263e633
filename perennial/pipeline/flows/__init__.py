"""The flows: the continuous-training loop and the adaptation."""
