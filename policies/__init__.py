"""Policies: SASRec layers, pluggable backbones and the LARES depth-recurrent reasoner."""
