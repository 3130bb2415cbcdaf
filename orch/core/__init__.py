"""The pure core: inputs (config, plan, rules, spec, schemas) checked and turned into data; no processes, no git."""
