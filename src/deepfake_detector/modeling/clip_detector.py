"""A deepfake classifier on a frozen CLIP ViT image tower: multi-block class tokens and a light head.

Why not transformers' own `CLIPForImageClassification`: it pools the last block's patch tokens only,
the weakest features for this task in our trial. Forgery traces live in the middle blocks as much as in
the last one (the premise of RINE and of UniversalFakeDetect's successors), so the head here reads the
class token after every block plus the mean patch token of the last block, standardises them with
statistics fitted on the training features (stored as buffers, so they travel with the checkpoint),
and classifies them with a linear layer.

The classes are registered with transformers' Auto classes (`register_auto_classes`, the way
transformers documents custom models), so a saved folder loads with
``AutoModelForImageClassification.from_pretrained`` and ``transformers.pipeline("image-classification")``
once this module's registration has run; `deepfake_detector.modeling.checkpoints` runs it before any
load.

Domains (``config.domains``, e.g. ``["face", "general"]``): a face head alone answers a landscape with
a confident "real" it has no grounds for. With domains, the same standardised features also feed a
domain probe (a linear layer: which domain the image belongs to) and one head per domain; ``logits``
are those of the head of the domain the probe picks (so ``pipeline("image-classification")`` gives
the routed answer), and the output also carries ``domain_logits``. One tower pass serves every head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import CLIPVisionConfig, PretrainedConfig
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.models.clip.modeling_clip import CLIPPreTrainedModel, CLIPVisionModel

MODEL_TYPE = "deepfake-clip-detector"


class ClipDetectorConfig(PretrainedConfig):
    """Configuration of `ClipDetectorForImageClassification`.

    Args:
        vision_config: The CLIP image tower's `CLIPVisionConfig` (or its dict).
        feature_blocks: Blocks (1-based, as in ``hidden_states``) whose class token the head reads.
            None: every block.
        use_mean_patch_token: Also read the mean patch token of the last block.
        domains: Names of the domains the model tells apart (the first is the face domain), each with
            its own head, routed by a domain probe; None: one head, no probe.
        initializer_factor: CLIP's weight-init scale (used for randomly initialised test models).
    """

    model_type = MODEL_TYPE
    sub_configs = {"vision_config": CLIPVisionConfig}  # noqa: RUF012 (transformers reads it as is)

    def __init__(
        self,
        vision_config: dict | CLIPVisionConfig | None = None,
        feature_blocks: list[int] | None = None,
        use_mean_patch_token: bool = True,
        domains: list[str] | None = None,
        initializer_factor: float = 1.0,
        **kwargs,
    ) -> None:
        if vision_config is None:
            vision_config = CLIPVisionConfig()
        elif isinstance(vision_config, dict):
            vision_config = CLIPVisionConfig(**vision_config)
        self.vision_config = vision_config
        blocks = list(feature_blocks or range(1, vision_config.num_hidden_layers + 1))
        if not all(1 <= block <= vision_config.num_hidden_layers for block in blocks):
            raise ValueError(
                f"feature_blocks must lie in 1..{vision_config.num_hidden_layers}, got {feature_blocks}"
            )
        self.feature_blocks = blocks
        self.use_mean_patch_token = use_mean_patch_token
        if domains is not None and (len(domains) < 2 or len(set(domains)) != len(domains)):
            raise ValueError(f"domains must name two or more distinct domains, got {domains}")
        self.domains = list(domains) if domains is not None else None
        self.initializer_factor = initializer_factor
        super().__init__(**kwargs)

    @property
    def num_features(self) -> int:
        tokens = len(self.feature_blocks) + (1 if self.use_mean_patch_token else 0)
        return tokens * self.vision_config.hidden_size


def compute_token_features(hidden_states, feature_blocks, use_mean_patch_token: bool) -> torch.Tensor:
    """The tokens the head reads, from a CLIP tower's ``hidden_states`` (embeddings, then each block).

    Returns:
        (B, tokens, D): the class token after each of ``feature_blocks``, then the last block's mean
        patch token when ``use_mean_patch_token``.
    """
    tokens = [hidden_states[block][:, 0] for block in feature_blocks]  # each (B, D)
    if use_mean_patch_token:
        tokens.append(hidden_states[-1][:, 1:].mean(dim=1))  # (B, D)
    return torch.stack(tokens, dim=1)  # (B, tokens, D)


@dataclass
class DomainClassifierOutput(ImageClassifierOutput):
    """`ImageClassifierOutput` plus the domain probe's logits, (B, domains); None without domains."""

    domain_logits: torch.FloatTensor | None = None


class ClipDetectorForImageClassification(CLIPPreTrainedModel):
    """CLIP image tower + standardised multi-block features + linear head (one per domain)."""

    config_class = ClipDetectorConfig
    base_model_prefix = "clip_detector"
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    def __init__(self, config: ClipDetectorConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vision_model = CLIPVisionModel._from_config(config.vision_config)
        width = config.num_features
        # Fitted on the training features by the head's trainer; identity until then.
        self.register_buffer("feature_mean", torch.zeros(width))
        self.register_buffer("feature_scale", torch.ones(width))
        self.classifier = nn.Linear(width, config.num_labels)
        domains = config.domains or []
        # One head per domain after the first (whose head is ``classifier``), and the probe between them.
        self.domain_classifiers = nn.ModuleList(nn.Linear(width, config.num_labels) for _ in domains[1:])
        self.domain_classifier = nn.Linear(width, len(domains)) if domains else None
        self.post_init()

    def _init_weights(self, module) -> None:
        super()._init_weights(module)
        if module is self:
            nn.init.zeros_(self.feature_mean)
            nn.init.ones_(self.feature_scale)

    def compute_features(self, pixel_values: torch.Tensor, **kwargs) -> tuple[torch.Tensor, object]:
        """Unstandardised head inputs (B, tokens, D) and the tower's outputs (for attentions)."""
        outputs = self.vision_model(pixel_values, output_hidden_states=True, **kwargs)
        tokens = compute_token_features(
            outputs.hidden_states, self.config.feature_blocks, self.config.use_mean_patch_token
        )
        return tokens, outputs

    def classify_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_labels) from `compute_features`' tokens (B, tokens, D), or flattened (B, F):
        with domains, each row's from the head of the domain the probe picks."""
        logits, _ = self.classify_features_with_domains(tokens)
        return logits

    def classify_features_with_domains(
        self, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, num_labels) and domain logits (B, domains) (None without domains).

        Always in float32, even when the model was cast to bfloat16 for speed: the residual stream's
        outlier dimensions reach the hundreds, and standardising them in bfloat16 (8 bits of mantissa)
        would move the logits by more than the tower's own bfloat16 error.
        """
        features = tokens.reshape(tokens.shape[0], -1).float()  # (B, F)
        standardised = (features - self.feature_mean.float()) / self.feature_scale.float()

        def linear(layer: nn.Linear) -> torch.Tensor:
            return nn.functional.linear(standardised, layer.weight.float(), layer.bias.float())

        with torch.autocast(device_type=features.device.type, enabled=False):
            logits = linear(self.classifier)  # (B, C)
            if self.domain_classifier is None:
                return logits, None
            domain_logits = linear(self.domain_classifier)  # (B, domains)
            heads = torch.stack([logits, *(linear(head) for head in self.domain_classifiers)], dim=1)
            chosen = domain_logits.argmax(dim=1)  # (B,)
            # gather, not heads[arange(B), chosen]: indexing by arange fixes the batch size in an export.
            index = chosen[:, None, None].expand(-1, 1, heads.shape[2])  # (B, 1, C)
            routed = heads.gather(1, index).squeeze(1)  # (B, C): (B, domains, C) picked by domain
            return routed, domain_logits

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput:
        tokens, outputs = self.compute_features(pixel_values, output_attentions=output_attentions, **kwargs)
        logits, domain_logits = self.classify_features_with_domains(tokens)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits, labels)
        return DomainClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            domain_logits=domain_logits,
        )


def register_auto_classes() -> None:
    """Makes ``AutoConfig``/``AutoModelForImageClassification`` (and so ``pipeline``) know these classes.

    Idempotent; the Auto classes refuse a second registration of the same type, so it is skipped.
    """
    from transformers import AutoConfig, AutoModelForImageClassification
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if MODEL_TYPE in CONFIG_MAPPING:
        return
    AutoConfig.register(MODEL_TYPE, ClipDetectorConfig)
    AutoModelForImageClassification.register(ClipDetectorConfig, ClipDetectorForImageClassification)


def build_image_processor(image_size: int = 224):
    """The detector's image processor: the whole image resized (bicubic) to the tower's input, CLIP's
    mean and std. No centre crop, so heatmaps map back onto the whole image."""
    from PIL import Image
    from transformers import ViTImageProcessor
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    return ViTImageProcessor(
        size={"height": image_size, "width": image_size},
        resample=Image.Resampling.BICUBIC,
        image_mean=list(OPENAI_CLIP_MEAN),
        image_std=list(OPENAI_CLIP_STD),
    )


def build_clip_detector(backbone_folder, *, id2label: dict[int, str], **config_kwargs):
    """A `ClipDetectorForImageClassification` with the pretrained tower from ``backbone_folder`` (a
    `CLIPVisionModelWithProjection` folder, `clip_backbone.ensure_backbone`) and an untrained head.

    Raises:
        ValueError: The folder's weights don't fill the tower exactly.
    """
    from pathlib import Path

    from safetensors.torch import load_file

    vision_config = CLIPVisionConfig.from_pretrained(backbone_folder)
    config = ClipDetectorConfig(
        vision_config=vision_config.to_dict(),
        id2label={int(k): v for k, v in id2label.items()},
        label2id={v: int(k) for k, v in id2label.items()},
        **config_kwargs,
    )
    model = ClipDetectorForImageClassification(config)
    weights = load_file(Path(backbone_folder) / "model.safetensors")
    tower = {name: value for name, value in weights.items() if name.startswith("vision_model.")}
    missing, unexpected = model.load_state_dict(tower, strict=False)
    missing = [name for name in missing if name.startswith("vision_model.")]
    if missing or unexpected:
        raise ValueError(
            f"{backbone_folder}: backbone weights don't fit (missing {missing}, unexpected {unexpected})"
        )
    return model.eval()
