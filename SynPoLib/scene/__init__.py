"""The 3D Slicer adapter: MRML nodes in, a segment out, a run in between.

The only part of SynPoLib that touches ``slicer``: it runs in the Slicer application
and, without Qt, on PyPI's ``slicer-core`` (the tests do that). ``slicer`` and ``vtk``
are imported inside the functions, so importing this package costs nothing and needs
neither. The Slicer module's Logic is a thin caller of these names.

- :mod:`.nodes`: volumes, segments and views as arrays (geometry checked);
- :mod:`.writer`: the result as a new segment (or rewritten in place by a run again
  after corrections), with rollback and undo;
- :mod:`.runs`: inputs read once, the model on a worker thread, streaming writes; one
  segment or several in one run; a run again after the user corrected slices; the
  review list;
- :mod:`.slicing`: slice and grid arithmetic between volumes (pure numpy);
- :mod:`.loading`: result files (a batch's volumes and segmentations) into the scene;
- :mod:`.selftest`: the module self-test's recipe, shared with pytest.
"""

from ..errors import MRMLInputError, RunInProgress
from .nodes import (BINARY_LABELMAP, DEFAULT_COLOR, ViewSlice, contrasting_color, default_inputs, display_window,
                    ensure_converter_rules, ijk_to_world, parent_to_world, same_node, segment_array, segment_color,
                    segment_names, segments_drawn_on, slice_center_ras, slice_from_view, support_slices_from_segment,
                    volume_array, RESULT_TAG, is_result_segment)
from .runs import (CHANGED_BY_CORRECTION, CORRECTED_BY_USER, CorrectionRun, NodeInputs, ReviewRow, RunStatus,
                   SegmentInput, SegmentationRun, active_run, corrected_slices, read_inputs, rerun_on_nodes,
                   review_rows, run_on_nodes)
from .loading import load_results, load_segmentation, load_volume
from .slicing import (AXIS_MATCH_DEGREES, Reorientation, axis_direction_name, guess_axis, labelled_slices, map_slice,
                      query_slices, spacing_kji, voxel_centers_ras)
from .writer import SegmentUpdater, SegmentWriter

__all__ = [
    # nodes in
    "MRMLInputError", "display_window", "ijk_to_world", "parent_to_world", "read_inputs", "same_node",
    "segment_array", "segment_color", "segment_names", "slice_center_ras", "slice_from_view", "volume_array",
    "ViewSlice", "ensure_converter_rules", "BINARY_LABELMAP", "default_inputs", "support_slices_from_segment",
    "segments_drawn_on", "RESULT_TAG", "is_result_segment",
    # a segment out
    "SegmentWriter", "SegmentUpdater", "contrasting_color", "DEFAULT_COLOR",
    # files in (a batch's results, for review)
    "load_results", "load_segmentation", "load_volume",
    # runs
    "NodeInputs", "RunInProgress", "RunStatus", "SegmentationRun", "active_run", "run_on_nodes", "SegmentInput",
    # several segments, runs again after corrections, the review list
    "CorrectionRun", "rerun_on_nodes", "corrected_slices", "ReviewRow", "review_rows", "CHANGED_BY_CORRECTION",
    "CORRECTED_BY_USER",
    # slice geometry
    "AXIS_MATCH_DEGREES", "Reorientation", "axis_direction_name", "guess_axis", "labelled_slices", "map_slice",
    "query_slices", "spacing_kji", "voxel_centers_ras",
]
