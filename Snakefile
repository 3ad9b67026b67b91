# grokbench: datasets -> training runs -> summary -> figures.
# Usage: snakemake --cores 2            (the embedded default config.yaml)
#        snakemake --configfile my.yaml --profile slurm
from snakemake.utils import min_version

min_version("8.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/figures.smk"


rule all:
    input:
        summary_outputs(),
        claims_outputs(),
        figure_outputs(),
    default_target: True
