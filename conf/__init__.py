"""The hydra configs of `score-sde` (train.yaml, sample.yaml, likelihood.yaml and their groups),
shipped as package data so that an installed wheel finds them as `pkg://score_sde.conf`."""
