"""Figure helpers: the choices they make from the data (axis scale), not pixels."""
import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402

from atkit.experiments.figures import perception_mse_figure  # noqa: E402


def _summary(random_mse: float, pgd_mse: float = 0.06) -> pd.DataFrame:
    return pd.DataFrame({"pair": ["Clean / Random", "Random / Random", "PGD-AT / PGD-20"],
                         "mse_success": [1.8, random_mse, pgd_mse], "mse_failure": [2.5, random_mse * 1.5, pgd_mse * 3],
                         "clean_acc": [80.0, 76.0, 77.0], "perturbed_acc": [77.0, 76.5, 71.0]})


def test_mse_axis_goes_log_only_when_bars_span_orders_of_magnitude():
    wide = perception_mse_figure(_summary(0.005))
    assert wide.axes[0].get_yscale() == "log" and "log scale" in wide.axes[0].get_ylabel()
    narrow = perception_mse_figure(_summary(0.5, pgd_mse=0.3))  # 2.5 / 0.3 < 30
    assert narrow.axes[0].get_yscale() == "linear"
    forced = perception_mse_figure(_summary(0.5, pgd_mse=0.3), log_scale=True)
    assert forced.axes[0].get_yscale() == "log"
