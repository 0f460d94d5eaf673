"""The signal pipeline (quality gate, beats, features) and the shipped recordings' reader; pure."""
