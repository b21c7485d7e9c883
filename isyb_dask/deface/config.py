"""Settings of the face-masking stage."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DefaceConfig:
    """Face masking and NMI settings (see docs/deface.md, METHODS §2 and §4).

    Attributes
    ----------
    method
        ``"maskface"`` (surface blur in the manner of mask_face, default) or ``"zero"``.
    nmi_bins
        Equal-width bins per axis of the joint histogram (arithmetic NMI).
    keep_removed_face
        Write ``original - defaced`` as a derivative with file mode 0600.
    seed
        Seed of every random choice (registration sampling, layer jitter).
    templates
        Template specs (kept for configuration files; the runner resolves them).
    threads
        SimpleITK threads per task (the runner sets it from ``RunConfig.task_threads``).
    nmi_average
        Normalisation of the mutual information: ``"arithmetic"`` (default, [0, 1]),
        ``"geometric"``, ``"min"``, ``"max"``, ``"joint"`` or ``"studholme"`` ([1, 2]).
    nmi_epsilon
        A voxel belongs to the subject's NMI face mask when ``|original - defaced| > eps``
        for at least one template (union over templates, METHODS §4 option (i)).
    nmi_dilate
        Dilate the union face mask by this many voxels.
    layer_mm
        Half-thickness of the flattened layer around the skin (mask_face: 8 mm x grain).
    grid_mm
        Node spacing of the skin height field (mask_face: 15 mm x grain).
    jitter_vox
        Amplitude of the uniform jitter of the layer surfaces in voxels (mask_face uses 4 with
        an unseeded generator; default 0 = off; seeded with ``seed`` when on).
    brain_dilate_mm
        Radius of the dilation of the carried-over brain mask whose voxels are always
        restored (METHODS §2.5: max(2 voxels, 4 mm)).
    roi_margin_mm
        Margin added around the face region (mask_face enlarges its box by 6 mm).
    """

    method: str = "maskface"
    nmi_bins: int = 64
    keep_removed_face: bool = False
    seed: int = 20220531
    templates: tuple[str, ...] = field(default_factory=tuple)
    threads: int = 1
    nmi_average: str = "arithmetic"
    nmi_epsilon: float = 0.0
    nmi_dilate: int = 0
    layer_mm: float = 8.0
    grid_mm: float = 15.0
    jitter_vox: float = 0.0
    brain_dilate_mm: float = 4.0
    roi_margin_mm: float = 6.0

    def __post_init__(self) -> None:
        if self.method not in ("maskface", "zero"):
            raise ValueError(f"deface method must be 'maskface' or 'zero', got {self.method!r}")
        if self.nmi_bins < 2:
            raise ValueError(f"nmi_bins must be >= 2, got {self.nmi_bins}")
        if self.nmi_average not in (
            "arithmetic", "geometric", "min", "max", "joint", "studholme"
        ):
            raise ValueError(f"unknown nmi_average {self.nmi_average!r}")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if not 1.0 <= self.layer_mm <= 30.0:
            raise ValueError(f"layer_mm must be within [1, 30], got {self.layer_mm}")
