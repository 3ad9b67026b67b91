"""Mechanistic analyses of trained checkpoints.

- `weights`: weight norms across a run's checkpoints (per module, per module group, in total);
- family-agnostic probes through `Backbone.hidden_states`, one module per analysis, each a pure function
  returning a pandas DataFrame: `lens` (logit lens), `probes` (linear probes), `tracing` (causal tracing by
  activation patching); `facts` reads the dataset layout (which facts, positions, labels, corruptions) and
  `analyze` runs the three on one checkpoint. "Layer" there is the index into `Backbone.hidden_states`
  (0 the embedding, l the output of the l-th block application, n_layer * loops of them) and "position"
  the 0-based input token index.
"""
