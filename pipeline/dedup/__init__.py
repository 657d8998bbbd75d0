"""Duplicate removal before captioning: the barrier between the index pass and the caption pass.

A global dedup needs every embedding before it can say which image of a group came first, so a
run with a ``dedup`` section has two passes (:mod:`pipeline.curate`):

1. **Index pass**: source -> fetch -> content hash -> decode -> embed, committed like any run under
   ``<run>/index/`` (resumable, exactly once). No model-generation GPU time is spent.
2. **Barrier** (:mod:`pipeline.dedup.barrier`): reads only what pass 1 committed and decides, with
   bounded memory, which rows are duplicates; writes ``<run>/index/decisions.parquet`` (id,
   duplicate_of, similarity, reason) last, so a crash before it reruns the barrier and one after
   it does not. Schedules also compare with every earlier increment's index, kept under
   ``schedule.state_uri`` and trusted only for increments whose run is recorded as committed.
3. **Caption pass**: the plan again, with a mark stage right after the source (or after the stage
   that produces the id) that sets ``status: duplicate`` and the evidence, so duplicates are never
   fetched, decoded, embedded or captioned again; every listed row still lands exactly once.

"First" is the order ``(increment, id)``: rows of an earlier increment come before this run's,
and within a run the smaller id (a stable hash of the location or bytes) comes first, so reruns,
resumes and every machine agree. A row is a duplicate when an earlier row has the same bytes
(exact: ``duplicate_similarity`` 1, no model) or an embedding whose cosine similarity reaches
``dedup.threshold`` (near); ``duplicate_of`` names the most similar such earlier row (the earliest
among equals). This is SemDeDup's rule (a row is removed if any earlier row is within the
threshold), decided for every row independently, so it needs no sequential pass.

Scale (:mod:`pipeline.dedup.index`): the embeddings are clustered (k-means on a deterministic
sample, about ``dedup.cluster_size`` rows per cluster) and every row is spilled to its own
cluster and, as a guest, to every other cluster whose Voronoi cell its threshold ball reaches
(the bisector test); each cluster is then searched alone, exactly. Memory is one cluster's
vectors plus the duplicate hits, not the corpus; exact duplicates are grouped by hash bucket.
"""
