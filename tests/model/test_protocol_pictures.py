"""Which test cases the outcome pictures show (anatoseg.experiments.protocol.pictures.choose), from case records."""

from __future__ import annotations

from anatoseg.experiments.protocol.pictures import OUTCOMES, choose
from anatoseg.experiments.protocol.report import UPTAKE_GROUPS


def _case(name: str, kidney_fp: int, lesions: list[tuple[int, float, str, bool]]) -> dict:
    groups = {group: {"count": 0, "volume_ml": 0.0} for group in UPTAKE_GROUPS}
    groups["kidney"] = {"count": kidney_fp, "volume_ml": 0.5 * kidney_fp}
    return {"case": name, "fp_by_organ": {**groups, "other": {"count": 3, "volume_ml": 9.0}},
            "lesions": [{"lesion": k, "volume_ml": v, "site": "axillary_node", "relation": relation, "detected": found}
                        for k, v, relation, found in lesions]}


def test_each_outcome_takes_the_case_that_shows_it_most():
    ours = [_case("a", 0, [(1, 2.0, "abutting:lungs", True), (2, 9.0, "none", False)]),
            _case("b", 1, [(1, 5.0, "abutting:liver", True), (2, 1.0, "inside:skeleton", False)]),
            _case("c", 0, [])]
    theirs = [_case("a", 1, [(1, 2.0, "abutting:lungs", False), (2, 9.0, "none", False)]),
              _case("b", 1, [(1, 5.0, "abutting:liver", True), (2, 1.0, "inside:skeleton", True)]),
              _case("c", 3, [])]
    chosen = choose(ours, theirs)
    assert set(chosen) == set(OUTCOMES)
    assert chosen["fp-removed"]["case"] == "c" and chosen["fp-removed"]["why"].startswith("3 fewer")
    # the abutting lesion the other network missed wins over a larger one both found
    assert (chosen["abutting-found"]["case"], chosen["abutting-found"]["lesion"]["lesion"]) == ("a", 1)
    assert chosen["abutting-found"]["why"].endswith("missed without")
    assert (chosen["miss"]["case"], chosen["miss"]["lesion"]["volume_ml"]) == ("a", 9.0)
    # without such a lesion, one in another case than the false-positive picture's wins over a larger one in it
    ours[1]["lesions"][0]["relation"] = "none"
    ours.append(_case("c", 0, [(1, 5.0, "abutting:heart", True)]))
    theirs[0]["lesions"][0]["detected"] = True
    chosen = choose(ours[:2] + ours[3:], theirs)
    assert chosen["fp-removed"]["case"] == "c" and chosen["abutting-found"]["case"] == "a"


def test_an_outcome_no_case_shows_is_none():
    ours = [_case("a", 2, [(1, 2.0, "inside:breasts", True)])]
    theirs = [_case("a", 1, [(1, 2.0, "inside:breasts", True)])]
    assert choose(ours, theirs) == {"fp-removed": None, "abutting-found": None, "miss": None}
