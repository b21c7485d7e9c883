"""Settings of the face-masking stage."""

from __future__ import annotations

from dataclasses import dataclass, field

METHODS = ("maskface", "zero", "reface")


@dataclass(frozen=True)
class DefaceConfig:
    """Face masking and NMI settings (see docs/deface.md, METHODS §2 and §4).

    Attributes
    ----------
    method
        ``"maskface"`` (the subject's facial skin layer replaced by a smooth one, default),
        ``"zero"`` (pydeface style) or ``"reface"`` (the template's face blended in).
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
    nmi_mask
        ``"template"`` (default): NMI of each template inside the voxels that template
        changed (``|original - defaced| > eps``, METHODS §4 option (iii), the paper's "mask
        for each blurred surface"); ``"union"``: inside the union over the subject's
        templates (option (i)).
    nmi_epsilon
        Change threshold of the NMI face masks.
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
        Margin added around the face region (mask_face enlarges its box by 6 mm; the blend
        weight of ``maskface``/``reface`` is 1 within ``blend_margin_mm``).
    skin_depth_mm
        ``maskface``: depth of the replaced layer under the old or the new skin (16 mm: fully
        replaced down to ``skin_depth_mm - blend_ramp_mm`` = 6 mm, then faded out).
    opaque_otsu
        ``maskface``/``reface``: the new layer is opaque up to this multiple of the image's
        tissue/air Otsu threshold (twice the skin threshold): every iso-surface up to that
        level lies within 6 mm of the smooth new skin (:func:`isyb_dask.deface.blur.maskface_blur`,
        ``opaque_level``). On the volunteer, the outer 10 mm of the original face reach
        1.0 x Otsu in half of the face's columns and 1.5 x in a quarter: above 1.6 x the
        original face is itself mostly see-through. 0: the subject's own depth profile.
    skin_smooth_mm
        ``maskface``: Gaussian sigma applied to the signed distance to the skin.
    skin_shift_mm
        ``maskface``: outward displacement of the smoothed skin.
    blend_margin_mm, blend_ramp_mm
        ``maskface``/``reface``: the weight is 1 up to ``blend_margin_mm`` outside the face
        region and falls to 0 over ``blend_ramp_mm``.
    blend_border_mm
        ``maskface`` (also the base of ``reface``): width of the feathered ramp over which the
        moved skin joins the kept skin at the region's border (wider = gentler; the skin's
        curvature across the border is about ``6 x move / width**2``).
    face_up_mm
        ``maskface``/``reface``: the face region is continued this far upwards so eyes and
        brow are covered whatever the template's face mask leaves.
    zero_coat_mm
        ``zero``: head voxels within this distance of the removed region get one uniform
        tissue intensity (plain wall at the cut; 0 = off).
    brain_grow_mm
        Without a subject anatomy: growth of the carried atlas brain into brain-bright
        voxels (:func:`isyb_dask.deface.brainmask.grow_brain`).
    clear_debris
        ``maskface``/``reface``: voxels of the face region's air (outside the head, not in
        the new skin layer) brighter than the skin threshold are set to the region's air
        level (:func:`isyb_dask.deface.skin.air_debris`): detached specks in front of
        the new face go. ``False`` keeps them (the behaviour before 2026-12-07).
    audit
        Run the face audit (renders, face detection, re-identification embedding) on every
        defaced head (default). ``False`` skips it, as when the ``audit`` extra is not
        installed: the audit columns stay empty and the stage's ``audit_note`` says why.
        For re-running the masking alone; a release should keep the audit.
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
    nmi_mask: str = "template"
    skin_depth_mm: float = 16.0
    skin_smooth_mm: float = 16.0
    skin_shift_mm: float = 8.0
    blend_margin_mm: float = 8.0
    blend_ramp_mm: float = 10.0
    blend_border_mm: float = 20.0
    face_up_mm: float = 40.0
    brain_grow_mm: float = 3.0
    zero_coat_mm: float = 8.0
    opaque_otsu: float = 1.6
    clear_debris: bool = True
    audit: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"deface method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.nmi_mask not in ("template", "union"):
            raise ValueError(f"nmi_mask must be 'template' or 'union', got {self.nmi_mask!r}")
        if not 2.0 <= self.skin_depth_mm <= 40.0 or not 2.0 <= self.skin_smooth_mm <= 40.0:
            raise ValueError("skin_depth_mm and skin_smooth_mm must be within [2, 40]")
        if not 0.0 <= self.opaque_otsu <= 4.0:
            raise ValueError(f"opaque_otsu must be within [0, 4], got {self.opaque_otsu}")
        from isyb_dask.deface.blur import OPAQUE_MM

        if self.opaque_otsu > 0 and self.skin_depth_mm - self.blend_ramp_mm < OPAQUE_MM:
            raise ValueError(
                f"opaque_otsu needs a fully replaced layer of {OPAQUE_MM:g} mm: skin_depth_mm - "
                f"blend_ramp_mm is {self.skin_depth_mm - self.blend_ramp_mm:g} mm (raise "
                f"skin_depth_mm or set opaque_otsu: 0)")
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
