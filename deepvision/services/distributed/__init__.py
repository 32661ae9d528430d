"""`index --ray`: the embedding stage on a Ray cluster (Ray Data), everything else as a local run.

The driver (this process) discovers, plans and commits exactly as a local `index` does
(services.sync.IndexRun); only the files that need embedding become a Ray dataset. Decode
tasks (CPU) turn each file into its model crops or its failure with the loader's own code
(`loader.PillowRun`: the same reasons as a local run); embedding actors each build the index's
Embedder once (`services.embedding.index_embedder`, a local run's code path) and run its network
on those crops. One row is one file from end to end, so a video's frames stay together. Rows
stream back to the driver, which commits them in chunks: workers never write the index, so a
killed driver resumes like a killed local run, and a lost worker is Ray's to retry.

cluster   the address, joining and leaving the cluster, the probe every node passes first
raydata   the Ray Data pipeline: RayEmbedders (the EmbedderFactory IndexRun gets), ActorPlan
rows      the row format: decode tasks and embedding actors (what runs on the workers), and
          the rows read back on the driver
shards    ClusterShards: an on-disk IVF-PQ build's shard tasks on the same cluster
"""
