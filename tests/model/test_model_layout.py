from simtune.model.layout import ParamLayout, transformer_param_numels


def test_gpt2_small_has_124m_parameters():
    assert sum(transformer_param_numels(12, 768, 3072, 50257, 1024)) == 124_439_808


def test_persistent_counts_tensors_up_to_the_threshold():
    layout = ParamLayout((10, 100, 5, 1000))
    assert layout.persistent(100) == (115, 3)
    assert layout.persistent(4) == (0, 0)


def test_partition_overlap_counts_straddling_tensors_whole():
    # 12 elements in 3 tensors, slices of 6: each rank touches two whole tensors
    assert ParamLayout((4, 4, 4)).max_partition_overlap(2) == 8
    # slices align with tensors: nothing straddles
    assert ParamLayout((6, 6)).max_partition_overlap(2) == 6


def test_partition_numel_pads_each_tensor():
    assert ParamLayout((5, 3)).partition_numel(2) == 3 + 2


def test_bucket_count_fills_greedily_in_backward_order():
    layout = ParamLayout((3, 3, 3))
    assert layout.bucket_count(6) == 2
    assert layout.bucket_count(9) == 1
    assert layout.bucket_count(2) == 3  # each oversized gradient on its own


def test_reuse_keeps_tensors_whose_backward_comes_within_the_distance():
    layout = ParamLayout((10, 10, 10))
    # distances to the backward reuse, last tensor first: 0, 20, 40
    assert layout.reuse_kept_numel(0, 0) == 0
    assert layout.reuse_kept_numel(0, 1) == 10
    assert layout.reuse_kept_numel(0, 21) == 20
    assert layout.reuse_kept_numel(0, 41) == 30
    assert layout.reuse_kept_numel(10, 41) == 0  # persistent tensors are never gathered


def test_sub_groups_gather_partitions_in_order_until_they_reach_the_size():
    layout = ParamLayout((100, 300, 50, 400, 10, 10))  # partitions at dp 2: 50, 150, 25, 200, 5, 5
    assert layout.largest_sub_group(10**9, 2) == layout.partition_numel(2) == 435
    # groups close at 200, then 225 (25 + 200), then the last two (10): the largest is 225
    assert layout.largest_sub_group(200, 2) == 225
    assert layout.largest_sub_group(1, 2) == 200  # one tensor a group
    # each group with the partitions of at least 30 elements among its own (the swapped gradients)
    assert layout.sub_groups(200, 2, 30) == ((200, 200), (225, 200), (10, 0))
    assert sum(n for n, _ in layout.sub_groups(1, 2, 1)) == layout.partition_numel(2)
    assert layout.sub_groups(10**9, 2, 1) == ((435, 435),)


def test_reuse_flags_each_tensor_kept_and_sub_groups_past_the_host_buffer_stay_beyond_it():
    layout = ParamLayout((10, 10, 10))
    assert layout.kept_after_forward(0, 21) == (0, 1, 1)
    assert layout.kept_after_forward(10, 41) == (0, 0, 0)
    layout = ParamLayout((100, 300, 50, 400, 10, 10))  # partitions at dp 2: 50, 150, 25, 200, 5, 5
    assert layout.sub_group_ends(200, 2) == (2, 4, 6)
    assert layout.sub_group_ends(10**9, 2) == (6,)
    # groups of 200, 225 and 10 elements: 200 fit a host buffer of 300, the second and, after it,
    # the third do not, although the third alone would
    assert layout.beyond_host_buffer(200, 2, 300) == (0, 0, 1, 1, 1, 1)
    assert layout.beyond_host_buffer(200, 2, 435) == (0,) * 6
    # one sub-group larger than the buffer: all of it beyond
    assert layout.beyond_host_buffer(10**9, 2, 434) == (1,) * 6
