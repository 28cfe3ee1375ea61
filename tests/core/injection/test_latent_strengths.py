"""Per-latent strengths: the string forms, and ACN's rule for latents not listed or out of the batch."""
import pytest

from cnr_pack.controlnet_core.injection.latents import LatentStrengths, parse_latent_strengths


def test_indices_and_inclusive_ranges_are_read():
    assert parse_latent_strengths("0:1.0, 1-3:0.5").entries == ((0, 1.0), (1, 0.5), (2, 0.5), (3, 0.5))


def test_a_plain_list_gives_latent_i_the_i_th_strength():
    assert parse_latent_strengths("1.0, 0.5, 0.25").factors(3) == (1.0, 0.5, 0.25)


def test_unlisted_latents_get_the_null_strength():
    assert parse_latent_strengths("1:0.5").factors(3, null_strength=0.2) == (0.2, 0.5, 0.2)


def test_negative_indices_count_from_the_end_of_the_batch():
    assert parse_latent_strengths("-1:0.5").factors(4, null_strength=1.0) == (1.0, 1.0, 1.0, 0.5)


def test_indices_outside_the_batch_are_ignored():
    assert parse_latent_strengths("0:0.3, 7:0.9").factors(2, null_strength=1.0) == (0.3, 1.0)


def test_a_later_entry_for_the_same_index_wins():
    assert parse_latent_strengths("0-2:0.5, 1:2.0").factors(3) == (0.5, 2.0, 0.5)


@pytest.mark.parametrize("text", ["", "0:abc", "3-1:0.5", "0:1.0, 0.5", "0:-1", "x:1", "0:nan"])
def test_malformed_strings_are_rejected_with_the_entry_named(text):
    with pytest.raises(ValueError):
        parse_latent_strengths(text)


def test_negative_strengths_are_rejected():
    with pytest.raises(ValueError):
        LatentStrengths(((0, -0.5),))
