"""Datasets: reading the data from disk (or generating it), nothing random. Each item is what a
pipeline starts from (``ablate.data.pipelines``); ``ablate.data.sources`` ties the two."""
