"""The main job's stages: world -> sids -> train -> pars -> eval.

``config`` (what runs), ``resume`` (one stage run, resumable by its marker),
``workdir`` (where every artefact lives), one module per stage and
``runner`` (the stages in order). This package imports nothing itself, so
``onesearch_jax.configs`` can import ``stages.config`` without loading the
stages.
"""
