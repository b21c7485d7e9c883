"""Template face mask by one rule on the template's own face."""

from __future__ import annotations

import nibabel as nb
import numpy as np

from isyb_dask.deface.facerule import _head_mask, rule_face_mask
from isyb_dask.deface.templates import builtin_template


def test_rule_reproduces_pydeface_mask_on_its_head_and_follows_a_shifted_face():
    t = builtin_template()
    img = nb.load(str(t.head))
    head = np.asarray(img.dataobj, dtype=np.float32)[::2, ::2, ::2]
    aff = img.affine @ np.diag([2.0, 2.0, 2.0, 1.0])
    brain = np.asarray(nb.load(str(t.brain_mask)).dataobj)[::2, ::2, ::2]
    ref = np.asarray(nb.load(str(t.face_mask)).dataobj)[::2, ::2, ::2] > 0.5
    keep = rule_face_mask(head, aff, brain)
    hm = _head_mask(head.astype(np.float64))
    a, b = (keep == 0) & hm, (~ref) & hm
    assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.85
    # the same head 10 mm further forward (world y): the mask moves with its face
    shifted = aff.copy()
    shifted[1, 3] += 10.0
    keep2 = rule_face_mask(head, shifted, brain)
    assert np.array_equal(keep2, keep)  # defined on the anatomy, not on world coordinates
