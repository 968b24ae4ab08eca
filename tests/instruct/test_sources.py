import os

import pytest

from streamo.instruct.sources import NO_SOURCE, VideoRoots, canonical_source, source_key


def test_source_names_match_without_case_or_punctuation_and_through_aliases():
    assert canonical_source("llava-video") == "LLaVA_Video"
    assert canonical_source("Youcookv2") == canonical_source("Youcook") == canonical_source("YOUCOOK2") == "YouCook2"
    assert canonical_source("EgoTimeQA") == "Ego4D"
    assert canonical_source(" MyLabData ") == "MyLabData"
    assert canonical_source("") == NO_SOURCE
    assert source_key("my-lab data") == source_key("MyLabData")


def test_each_source_gets_its_root_then_its_aliases_then_the_default(tmp_path):
    for name in ("yc", "yc_alias", "default", "anet"):
        (tmp_path / name).mkdir()
    roots = VideoRoots()
    roots.add(f"Youcook={tmp_path / 'yc_alias'}")
    roots.add(f"youcook2={tmp_path / 'yc'}")
    roots.add(f"ANet={tmp_path / 'anet'}")
    assert roots.root_for("YouCook2") == str(tmp_path / "yc")
    assert roots.root_for("Youcookv2") == str(tmp_path / "yc")  # the canonical spelling's root wins over an alias
    assert roots.root_for("Youcook") == str(tmp_path / "yc_alias")  # a root given for a spelling is that spelling's
    assert roots.root_for("ActivityNet") == str(tmp_path / "anet")
    assert roots.root_for("COIN") is None
    roots.add(str(tmp_path / "default"))
    assert roots.root_for("COIN") == str(tmp_path / "default")


def test_a_path_that_starts_with_its_source_folder_is_also_tried_without_it(tmp_path):
    (tmp_path / "LLaVA_Video").mkdir()
    roots = VideoRoots()
    roots.add(f"llava_video={tmp_path / 'LLaVA_Video'}")
    assert roots.candidates("LLaVA_Video/a/b.mp4", "LLaVA_Video") == [
        str(tmp_path / "LLaVA_Video" / "LLaVA_Video" / "a" / "b.mp4"), str(tmp_path / "LLaVA_Video" / "a" / "b.mp4")]
    assert roots.candidates("./a/../b.mp4", "LLaVA_Video") == [str(tmp_path / "LLaVA_Video" / "b.mp4")]
    assert roots.candidates("/abs/v.mp4", "COIN") == ["/abs/v.mp4"]  # absolute: no root needed
    assert roots.candidates("v.mp4", "COIN") is None


def test_a_later_root_for_the_same_spelling_wins(tmp_path):
    for name in ("from_file", "from_flag"):
        (tmp_path / name).mkdir()
    roots = VideoRoots()
    roots.add(f"Youcook={tmp_path / 'from_file'}")
    roots.add(f"youcook={tmp_path / 'from_flag'}")
    assert roots.root_for("Youcook") == roots.root_for("YouCook2") == str(tmp_path / "from_flag")


def test_a_roots_file_takes_the_same_specs_relative_to_itself(tmp_path):
    (tmp_path / "data" / "coin").mkdir(parents=True)
    (tmp_path / "all").mkdir()
    listing = tmp_path / "roots.txt"
    listing.write_text("# downloaded so far\n\nCOIN=data/coin\nall\n")
    roots = VideoRoots()
    roots.add_file(listing)
    assert roots.root_for("coin") == os.path.abspath(tmp_path / "data" / "coin")
    assert roots.default == os.path.abspath(tmp_path / "all")
    listing.write_text("COIN=data/nothing-here\n")
    with pytest.raises(ValueError, match=r"roots.txt:1: 'COIN=data/nothing-here': no such directory"):
        VideoRoots().add_file(listing)


@pytest.mark.parametrize("spec, message", [("=x", "empty source name"), ("COIN=", "empty directory"),
                                           ("COIN=/no/such/dir", "no such directory")])
def test_bad_root_specs_are_refused(spec, message):
    with pytest.raises(ValueError, match=message):
        VideoRoots().add(spec)


def test_a_directory_with_an_equals_sign_is_a_default_root(tmp_path):
    odd = tmp_path / "a=b"
    odd.mkdir()
    roots = VideoRoots()
    roots.add(str(odd))
    assert roots.default == str(odd)
