"""The job spec: what a YAML file under ``jobs/specs/`` becomes.

Every field carries a description (``vlmbatch spec-reference`` prints them). Specs name
endpoints, never secrets: credentials come from the standard chain (environment, profile,
instance or pod identity). Unknown keys are rejected so a typo fails at load time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_SECRET_KEYS = {"key", "secret", "password", "token", "aws_access_key_id", "aws_secret_access_key", "session_token"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageConfig(_Strict):
    """Where and how to reach an object store. Endpoint and region only: never credentials."""

    endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint, e.g. http://127.0.0.1:8333; None uses AWS_ENDPOINT_URL or AWS."
    )
    region: str | None = Field(None, description="Object-store region; None uses the standard chain.")
    anon: bool = Field(False, description="Read without credentials (public buckets).")

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint_has_scheme(cls, value: str | None) -> str | None:
        # botocore takes "127.0.0.1:8333" and fails on the first request, deep inside a retry loop.
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"endpoint_url {value!r} needs a scheme: http://{value} or https://{value}")
        return value


class SourceConfig(_Strict):
    """The image corpus to read."""

    uri: str = Field(description="Prefix to list: s3://bucket/prefix/, gs://..., file:///abs/dir or a local path.")
    extensions: tuple[str, ...] = Field(
        (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"),
        description="File-name suffixes (case-insensitive) that count as images; other objects are not listed.",
    )
    id_mode: Literal["location", "content"] = Field(
        "location",
        description="How a row's stable id is derived: from the normalised object location, or from a hash of "
        "the image bytes (identical files then share an id).",
    )
    limit: int | None = Field(
        None, ge=1, description="Take only the first N images the run would process, in listing order (a prefix: "
        "folder by folder, names sorted; a manifest: its order), for trials.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="How to reach the source store.")
    format: Literal["prefix", "llava_json", "llava_jsonl", "parquet", "webdataset"] = Field(
        "prefix",
        description="What source.uri names: an image prefix; a LLaVA / ShareGPT4V JSON or JSONL manifest "
        "(id, image relative to source.image_root, optional conversations); a Parquet manifest or a prefix of "
        "Parquet files (a URI column, or Hugging Face Image structs with embedded bytes); or WebDataset tar "
        "shards (a .tar file or a prefix of them: key.jpg beside key.json / key.txt).",
    )
    image_root: str | None = Field(
        None,
        description="Root that manifest image paths are relative to (llava_json / llava_jsonl / parquet URI "
        "columns); None uses the manifest's own folder. A path that escapes it is an invalid_entry row.",
    )
    image_column: str = Field(
        "image",
        description="Parquet manifests: the column holding a relative path / URI string, or a Hugging Face "
        "Image struct {bytes, path} whose bytes are used as they are (no fetch).",
    )
    id_column: str = Field(
        "id", description="Manifest field (JSON key or Parquet column) holding an entry's id, when present."
    )
    namespace: str | None = Field(
        None,
        description="Namespace of manifest ids, so two manifests that both use id '1' cannot collide; None "
        "uses the manifest's location.",
    )


class DecodeConfig(_Strict):
    """Decode and normalisation of fetched bytes."""

    max_side: int | None = Field(
        None, ge=16, json_schema_extra={"default_doc": "the model family's need"},
        description="Cap on the longest side after normalisation; larger images are reduced (aspect kept). None "
        "decodes at what the model family uses (e.g. 980 px for XComposer2-VL, hd_num x 336 for 4KHD); a cap "
        "below that is a validation error, since the model would see less than its card's code gives it.",
    )
    max_source_pixels: int = Field(
        200_000_000,
        ge=1,
        description="Header-declared width*height above which an image is rejected as a decompression bomb "
        "(status too_large) before any pixel is decoded.",
    )
    max_bytes: int = Field(64 * 1024 * 1024, ge=1, description="Objects larger than this are rejected unread.")
    fetch_retries: int = Field(4, ge=0, description="Retries of a transient fetch error, with exponential backoff.")


class EngineConfig(_Strict):
    """Settings handed to the inference engine inside each actor."""

    kind: Literal["vllm", "transformers"] = Field("vllm", description="vllm (default) or the transformers reference.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="Model dtype: auto (the checkpoint's), bfloat16, float16 or float32."
    )
    max_model_len: int | None = Field(None, ge=16, description="Context length; None uses the model's.")
    max_num_seqs: int = Field(64, ge=1, description="Sequences the engine schedules together.")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per engine (tensor parallelism).")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="Fraction of GPU memory vLLM may use.")
    enforce_eager: bool = Field(False, description="Disable CUDA graphs (always on for the CPU build).")
    cpu_kvcache_gib: int = Field(1, ge=1, description="KV cache size in GiB for vLLM's CPU build.")
    limit_images_per_prompt: int = Field(1, ge=1, description="Most images one prompt carries.")
    load_format: str = Field("auto", description="vLLM load format; 'dummy' gives random weights for benchmarks.")
    cpu_prepare: bool = Field(
        True, description="For families whose image processor vlmbatch owns (XComposer2): resize, tile and "
        "normalise images on the CPU prepare stage, so the vLLM engine's process only runs the model; false "
        "leaves that to the engine's processor (same arrays, more CPU in the engine's process).")
    seed: int = Field(0, description="Engine seed.")


class ModelConfig(_Strict):
    """The vision-language model and how to serve it."""

    family: str = Field(description="Model family in the registry (prompt format, stop tokens, preprocessing).")
    model_id: str = Field(description="Hub id or local directory of the checkpoint. '~' and ${VAR} are expanded.")
    revision: str | None = Field(None, description="Pinned revision (commit) of the checkpoint.")
    trust_remote_code: bool = Field(False, description="Allow the checkpoint's own code; requires a pinned revision.")
    engine: EngineConfig = Field(default_factory=EngineConfig, description="Engine settings.")
    hd_num: int | None = Field(
        None, ge=1, description="InternLM-XComposer2-4KHD: most 336-px tiles per image (the card's examples use "
        "55); None uses the checkpoint config's, else the remote code's default, 25. Other families reject it.",
    )

    @model_validator(mode="after")
    def _remote_code_needs_revision(self) -> ModelConfig:
        if self.trust_remote_code and not self.revision:
            raise ValueError("trust_remote_code: true requires a pinned revision (model.revision)")
        return self


class SamplingConfig(_Strict):
    """Sampling settings; their hash is recorded on every row."""

    max_tokens: int = Field(256, ge=1, description="Most tokens generated per image.")
    min_tokens: int = Field(0, ge=0, description="Fewest tokens generated before a stop may end a generation.")
    temperature: float = Field(0.0, ge=0, description="0 is greedy.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    repetition_penalty: float | None = Field(
        None, gt=0, json_schema_extra={"default_doc": "the family's"},
        description="Penalty on repeated tokens (1 is none); None uses the model card's (XComposer2 chat(): "
        "1.005), else 1.",
    )
    num_beams: int | None = Field(
        None, ge=1, json_schema_extra={"default_doc": "1"},
        description="Beam search width (the 4KHD card's example uses 3); 1 or None decodes greedily or samples. "
        "Beams need temperature 0 and the vLLM engine.",
    )
    seed: int | None = Field(0, description="Per-request seed, so sampled output is reproducible.")
    ignore_eos: bool = Field(False, description="Keep generating past EOS (benchmarks use fixed lengths).")

    @model_validator(mode="after")
    def _bounds(self) -> SamplingConfig:
        if self.min_tokens > self.max_tokens:
            raise ValueError(f"min_tokens ({self.min_tokens}) is more than max_tokens ({self.max_tokens})")
        return self

    def digest(self) -> str:
        """Short stable hash of these settings."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def resolved(self, defaults: Mapping[str, object] = ()) -> SamplingConfig:
        """These settings with every unset (None) field filled: ``defaults`` (a family's card settings)
        first, then the neutral values (no repetition penalty, one beam)."""
        fill = {**_NEUTRAL_SAMPLING, **dict(defaults)}
        return self.model_copy(update={k: v for k, v in fill.items() if getattr(self, k) is None})

    @model_validator(mode="after")
    def _beams_are_greedy(self) -> SamplingConfig:
        if (self.num_beams or 1) > 1 and self.temperature > 0:
            raise ValueError(f"sampling.num_beams={self.num_beams} needs temperature 0 (beam search does not sample)")
        return self


#: What an unset sampling field means when the family has no card setting for it.
_NEUTRAL_SAMPLING = {"repetition_penalty": 1.0, "num_beams": 1}


class CaptionConfig(_Strict):
    """The captioning task."""

    prompt: str = Field(
        "Describe this image in detail.", min_length=1, description="Instruction given with each image."
    )
    system_prompt: str | None = Field(None, description="Optional system message; None uses the family's default.")
    prompts: tuple[str, ...] = Field(
        (),
        description="ShareGPT4V-style prompt set: one is drawn per image, deterministically from its id (a "
        "rerun draws the same); empty uses caption.prompt for every image.",
    )


class PostCheckConfig(_Strict):
    """Checks on every generation; a failed check is a row (or QA pair) status, never a training example."""

    empty: bool = Field(True, description="No text (after stripping whitespace) is status empty_generation.")
    truncated: bool = Field(
        True, description="A generation cut at sampling.max_tokens (finish_reason 'length') is status truncated."
    )
    repetition: bool = Field(True, description="A generation ending in a repetition loop is status repetition.")
    repetition_min_repeats: int = Field(
        4, ge=2, description="Back-to-back repeats of a word n-gram (n up to 8) at the end that make a loop."
    )
    refusal: bool = Field(True, description="A generation containing a refusal phrase is status refusal.")
    refusal_phrases: tuple[str, ...] = Field(
        ("I'm sorry", "I am sorry", "I cannot", "I can't", "I'm unable", "I am unable", "As an AI",
         "I apologize", "unable to provide", "cannot assist"),
        description="Case-insensitive phrases that mark a refusal.",
    )


class QAConfig(_Strict):
    """Visual QA after captioning: questions per image, then answers with the image (a second actor pool)."""

    questions_from: tuple[Literal["manifest", "set", "generate"], ...] = Field(
        ("manifest", "set"),
        min_length=1,
        description="Where an image's questions come from, in order of preference: the manifest's conversations, "
        "qa.question_set, or generated by the QA model from the image and its caption. The first that yields "
        "questions for an image is used.",
    )
    question_set: tuple[str, ...] = Field((), description="Questions to draw from, deterministically per image id.")
    questions_per_image: int = Field(2, ge=1, description="Questions drawn from the set or generated per image.")
    generate_prompt: str = Field(
        "Here is a description of this image: {caption}\nWrite {n} different short questions about the image "
        "that can be answered by looking at it, one per line, without answers.",
        description="Instruction for generating questions with the image; {caption} is the image's caption and "
        "{n} is questions_per_image. Each non-empty line of the reply (numbering stripped) is one question.",
    )
    model: ModelConfig | None = Field(
        None, description="Model answering (and generating) questions; None uses the caption model in its own pool."
    )
    sampling: SamplingConfig | None = Field(None, description="Sampling of QA generations; None uses sampling.")
    resources: ResourcesConfig | None = Field(None, description="The QA actor pool; None uses resources.")


class SinkConfig(_Strict):
    """Where committed Parquet goes."""

    uri: str = Field(description="Output root; the run writes under <uri>/<run_id>/ (staging, then manifest).")
    rows_per_file: int = Field(2048, ge=1, description="Target rows per Parquet file.")
    compression: Literal["zstd", "snappy", "gzip", "brotli", "lz4", "none"] = Field(
        "zstd", description="Parquet compression codec."
    )
    storage: StorageConfig = Field(default_factory=StorageConfig, description="How to reach the sink store.")


class ResourcesConfig(_Strict):
    """How much of the cluster the job uses."""

    num_engines: int = Field(1, ge=1, description="Actors in the model pool, one engine each.")
    gpus_per_engine: float = Field(0, ge=0, description="GPUs per engine actor (0 on CPU-only machines).")
    cpus_per_engine: float = Field(1, ge=0, description="CPUs reserved per engine actor.")
    batch_size: int = Field(16, ge=1, description="Rows per batch handed to an engine actor.")
    batches_in_flight: int | None = Field(
        None, ge=1, json_schema_extra={"default_doc": "twice `max_num_seqs`"},
        description="Batches one engine actor works on at once. Default: enough for twice the engine's "
        "max_num_seqs (at least 2), so its queue still holds work while a finished batch is replaced.",
    )
    engine_resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources each engine actor asks for besides CPUs and GPUs, e.g. {gpu_pool: 1} "
        "with `ray start --resources='{\"gpu_pool\": 8}'` on the nodes that may hold engines: pins the pool to a "
        "node group. A pool whose nodes are all lost waits until such a node joins again.",
    )
    cpu_batch_size: int = Field(32, ge=1, description="Rows per batch in fetch and decode tasks.")
    object_store_memory: int | None = Field(
        None, ge=64 * 1024 * 1024, json_schema_extra={"default_doc": "Ray Data's (half the object store)"},
        description="Bytes of Ray's object store the run's blocks may hold at once (fetched bytes and decoded "
        "pixels waiting for the engines, results waiting for the sink); fetch and decode pause when it is "
        "full. None: Ray Data's default, half the object store, which decoding faster than the engines fills "
        "with pixels. Give at least 4x the pixels the engines have in flight (num_engines x batch_size x "
        "batches_in_flight x decoded image bytes, ~0.6 MB at 448 px): less starves them (bench/README.md, growth).",
    )

    def in_flight(self, max_num_seqs: int) -> int:
        """Batches in flight per engine actor: the spec's value, else ``ceil(2 * max_num_seqs / batch_size)``.

        Exactly ``max_num_seqs`` rows in flight leaves engine slots empty from the moment a batch
        finishes until its replacement has been handed over and pre-processed (measured on an
        H100: Ray Data's LLM processor, 8 batches of 64 for 256 slots, streamed 19 % faster than
        4 x 64); twice as many keeps the engine's waiting queue non-empty.
        """
        if self.batches_in_flight is not None:
            return self.batches_in_flight
        return max(2, -(-2 * max_num_seqs // self.batch_size))


class RunConfig(_Strict):
    """Run identity and Ray connection."""

    run_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
        description="Run id; reuse one to resume. None derives a fresh one from the time.",
    )
    ray_address: str | None = Field(
        None, description="Ray cluster address; None joins RAY_ADDRESS or starts a local instance."
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray instance; None lets Ray decide.")
    progress_bars: bool = Field(True, description="Show Ray Data's per-operator progress bars.")
    actor_start_losses: int = Field(
        3, ge=0,
        description="Actors of one stage that may die while starting (a node lost while an engine loads its model) "
        "before the run fails; the count restarts when one of them starts. Ray Data's own default, 0, fails the run "
        "on the first, so one spot node lost during a model load would end it.",
    )
    lease_ttl_s: int = Field(
        60, ge=10, le=3600,
        description="Lifetime of the run-id lease (<sink.uri>/<run_id>/lease.json), renewed every quarter of it "
        "while the run lives: a second run of the id is refused, and a dead run's lease is taken over once it is "
        "this old (at once when the dead holder was on the same host).",
    )


class ScheduleConfig(_Strict):
    """A schedule: repeated runs of one spec over a growing corpus, each doing only what is new."""

    state_uri: str = Field(
        description="Where the schedule keeps its lock and the record of committed runs, per dataset version "
        "(e.g. s3://bucket/schedules/nightly/). Two runs of one schedule never overlap."
    )
    lock_ttl_s: int = Field(
        600, ge=60,
        description="Lifetime of the schedule's lock, renewed every quarter of it while a run of the schedule "
        "lives; a lock not renewed for this long belongs to a dead run and is taken over.",
    )


# --- Curation (issue 17): embeddings, near-duplicates, image-text alignment -------------------------------------


class EmbeddingConfig(_Strict):
    """The embedding model of the curation stages (dedup before captioning, alignment after), on its own actor pool."""

    kind: Literal["clip", "internvl-c", "perceptual"] = Field(
        "clip",
        description="clip: a CLIP checkpoint through transformers' CLIPModel (the light default); internvl-c: an "
        "InternVL-14B-224px style checkpoint (InternViT-6B + QLLaMA, the published remote-code layout) through "
        "vlmbatch's own PyTorch implementation, no remote code; perceptual: a DCT perceptual hash as a vector (no "
        "weights, images only; near-duplicates by resize, re-encode, slight crop, not meaning).",
    )
    model_id: str | None = Field(
        None, description="Local directory or hub id of the checkpoint (clip, internvl-c); None for perceptual."
    )
    revision: str | None = Field(None, description="Pinned revision (commit) of the checkpoint.")
    dtype: Literal["float16", "float32"] = Field(
        "float16", description="Float type of the committed embedding columns (fixed-size lists, L2-normalised)."
    )
    compute_dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="Model weights' dtype while embedding; auto: float16 on a GPU, float32 on the CPU."
    )
    num_actors: int = Field(1, ge=1, description="Actors in the embedding pool, one model each.")
    gpus_per_actor: float = Field(0, ge=0, description="GPUs per embedding actor (0 on CPU-only machines).")
    cpus_per_actor: float = Field(
        1, ge=0, description="CPUs reserved per embedding actor, held for the whole run: on a small CPU-only "
        "machine leave room for the decode tasks beside the caption actor (0 is allowed)."
    )
    batch_size: int = Field(32, ge=1, description="Images (or texts) per forward pass.")

    @model_validator(mode="after")
    def _needs_checkpoint(self) -> EmbeddingConfig:
        if self.kind != "perceptual" and not self.model_id:
            raise ValueError(f"embedding.kind {self.kind!r} needs embedding.model_id")
        return self


class DedupConfig(_Strict):
    """Duplicates removed before captioning: a first pass hashes and embeds every image, decides, then captions."""

    exact: bool = Field(True, description="Identical bytes (SHA-256 of the object) are duplicates; needs no model.")
    near: bool = Field(
        True, description="Images whose embeddings' cosine similarity reaches dedup.threshold are duplicates "
        "(needs an embedding section)."
    )
    threshold: float = Field(
        0.95, gt=0, le=1, description="Cosine similarity at or above which an image duplicates an earlier one."
    )
    cluster_size: int = Field(
        20_000, ge=16, description="Rows per partition of the near-duplicate index: the index is clustered "
        "(k-means) and searched one partition at a time, exactly (a row is also searched in every other "
        "partition its threshold ball reaches), so memory is that of one partition, not of the corpus."
    )


class AlignmentConfig(_Strict):
    """Caption-image agreement after captioning: the cosine of caption and image embeddings (a column either way)."""

    threshold: float = Field(
        0.2, ge=-1, le=1, description="Below this score an ok row becomes low_alignment (caption kept, not a "
        "training example); the score is committed for every captioned row, so any threshold can be applied later."
    )


class JobSpec(_Strict):
    """A captioning job: source -> decode -> caption -> sink."""

    name: str = Field(description="Job name; recorded in the manifest.", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    source: SourceConfig = Field(description="Input corpus.")
    decode: DecodeConfig = Field(default_factory=DecodeConfig, description="Decode and normalisation.")
    model: ModelConfig = Field(description="Model and engine.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="Sampling.")
    caption: CaptionConfig = Field(default_factory=CaptionConfig, description="Caption task.")
    sink: SinkConfig = Field(description="Output.")
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig, description="Resources.")
    run: RunConfig = Field(default_factory=RunConfig, description="Run options.")
    postcheck: PostCheckConfig = Field(
        default_factory=PostCheckConfig,
        description="Post-checks of every generation (empty, repetition, cut at max tokens, refusal), on by "
        "default; a failed check is a status, never a training example.",
    )
    qa: QAConfig | None = Field(
        None, description="Visual QA; present, the job builds a ShareGPT4V-style dataset (caption + QA per image)."
    )
    schedule: ScheduleConfig | None = Field(
        None, description="Run as one increment of a schedule: only images no committed run of it has processed."
    )
    embedding: EmbeddingConfig | None = Field(
        None,
        description="Embedding model of dedup and alignment; present, every decoded image's embedding is committed.",
    )
    dedup: DedupConfig | None = Field(
        None,
        description="Remove duplicates before captioning (two passes: hash and embed everything, decide, caption "
        "the rest); a duplicate is status duplicate with duplicate_of and duplicate_similarity. Schedules also "
        "compare with every earlier increment of the dataset version."
    )
    alignment: AlignmentConfig | None = Field(
        None, description="Score each caption against its image after captioning (needs an embedding section that "
        "embeds text: clip or internvl-c)."
    )

    @field_validator("source", "sink", mode="before")
    @classmethod
    def _no_secrets(cls, value: object) -> object:
        if isinstance(value, dict):
            found = _secret_keys(value)
            if found:
                raise ValueError(
                    f"specs must not hold credentials (found {', '.join(sorted(found))}); "
                    "use the environment, a profile or the instance identity"
                )
        return value

    @model_validator(mode="after")
    def _curation_needs_embedding(self) -> JobSpec:
        kind = self.embedding.kind if self.embedding else None
        if self.dedup is not None and self.dedup.near and kind is None:
            raise ValueError("dedup.near needs an embedding section (or set dedup.near: false for exact only)")
        if self.alignment is not None and kind in (None, "perceptual"):
            raise ValueError("alignment needs an embedding section whose kind embeds text (clip or internvl-c)")
        return self

    @model_validator(mode="after")
    def _room_for_the_prompt(self) -> JobSpec:
        pairs = [("", self.model, self.sampling)]
        if self.qa is not None:
            pairs.append(("qa.", self.qa.model or self.model, self.qa.sampling or self.sampling))
        for where, model, sampling in pairs:
            limit = model.engine.max_model_len
            if limit is not None and sampling.max_tokens >= limit:
                raise ValueError(f"{where}sampling.max_tokens ({sampling.max_tokens}) leaves no room for the prompt "
                                 f"in max_model_len ({limit})")
        return self

    def digest(self) -> str:
        """Stable hash of the spec minus run options (same work, same hash)."""
        blob = json.dumps(self.model_dump(mode="json", exclude={"run"}), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _secret_keys(value: object) -> set[str]:
    if isinstance(value, dict):
        found = {k for k in value if str(k).lower() in _SECRET_KEYS}
        for v in value.values():
            found |= _secret_keys(v)
        return found
    return set()
