# grokbench: datasets -> training runs -> summary -> claims, figures.
# Usage: snakemake --cores 2            (the embedded default config.yaml)
#        snakemake --configfile my.yaml --profile slurm
#        snakemake --cores 2 crate                   (the study as a Workflow Run RO-Crate)
#        snakemake --report report.html [available]  (the HTML report; `available`: what exists so far)
# The study is one file, read by workflow/rules/common.smk through grokbench.study (no `configfile:`
# directive here: Snakemake would merge a --configfile into it).
from snakemake.utils import min_version

min_version("8.0")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/mech.smk"
include: "workflow/rules/crate.smk"


rule all:
    default_target: True
    input:
        summary_outputs(),
        claims_outputs(),
        figure_outputs(),
        mech_outputs(),
