"""The printed tables of scripts/diagnose_drift.py, from its JSON results (the script's module
docstring says what each column measures)."""

from __future__ import annotations

import numpy as np


def print_tables(r: dict, names, leads) -> None:
    def row(cells, widths):
        return "  ".join(str(c).rjust(wd) for c, wd in zip(cells, widths))

    print("\n=== 1. Ensembles: (A) SH power ratio model/truth, (B) zonal ratio m28-32 (30-60 deg), "
          "(C) spread/skill, CRPS/clim, (D) global-mean sp - truth ===")
    hdr = ["variant", "lead", "chan", "A:l1-3", "A:max|r-1|l>=4(l)", "A:l25-31", "B:m28-32", "C:spr/skl",
           "C:CRPS", "C:CRPS/clim", "D:dsp[Pa]"]
    wid = [10, 4, 4, 7, 17, 8, 8, 9, 9, 11, 9]
    print(row(hdr, wid))
    for var, res in r["ensemble"].items():
        for lname in leads:
            e = res[lname]
            for k, name in enumerate(names):
                c = e[name]
                print(row([var if k == 0 else "", lname if k == 0 else "", name, f"{c['sh_ratio_l1_3']:.3f}",
                           f"{c['sh_max_abs_ratio_minus1_l_ge4']:.3f} ({c['sh_argmax_l_ge4']})",
                           f"{c['sh_ratio_l25_31']:.3f}", f"{c['zonal_ratio_m28_32_mean']:.2f}",
                           f"{c.get('spread_skill', float('nan')):.3f}", f"{c['crps']:.4g}",
                           f"{c['crps_ratio_to_clim']:.3f}",
                           f"{e['global_mean_sp_minus_truth_Pa']:+.1f}" if k == 0 else ""], wid))
    print("  (B per m = 28..32 in the JSON; noise_off: 1 member, CRPS = MAE, no spread)")

    print("\n=== 2. One-step (6 h) increment: power ratio model/truth by band, invisible share, rms ===")
    hdr = ["variant", "chan", "l1-3", "l4-10", "l11-20", "l21-31", "invis(mod)", "invis(tru)", "rms mod", "rms tru"]
    wid = [10, 4, 7, 7, 7, 7, 10, 10, 9, 9]
    print(row(hdr, wid))
    for var, e in r["increment"].items():
        for k, name in enumerate(names + ["sp"]):
            c = e[name]
            print(row([var if k == 0 else "", name, f"{c['power_ratio_l1_3']:.3f}", f"{c['power_ratio_l4_10']:.3f}",
                       f"{c['power_ratio_l11_20']:.3f}", f"{c['power_ratio_l21_31']:.3f}",
                       f"{c['invisible_share_model']:.4f}", f"{c['invisible_share_truth']:.4f}",
                       f"{c['rms_model']:.4g}", f"{c['rms_truth']:.4g}"], wid))
        print(f"{'':10}  all 18 channels invisible share: model {e['invisible_share_all_channels_model']:.4f}, "
              f"truth {e['invisible_share_all_channels_truth']:.4f}; global-mean sp increment: model "
              f"{e['global_mean_sp_increment_model_Pa']:+.2f} Pa/6h (member std "
              f"{e['global_mean_sp_increment_model_member_std_Pa']:.2f}), truth {e['global_mean_sp_increment_truth_Pa']:+.3f}")

    print("\n=== 3a. One-step output change from a 1%-of-std perturbation (shipped, fixed noise key) ===")
    hdr = ["perturbed", "chan", "out P l1-3", "out P l>=4", "out P l0", "share l1-3", "rms gain"]
    wid = [15, 4, 10, 10, 10, 10, 8]
    print(row(hdr, wid))
    for lab, e in r["sensitivity"].items():
        for k, name in enumerate(names + ["sp"]):
            c = e[name]
            print(row([lab if k == 0 else "", name, f"{c['out_power_l1_3']:.3g}", f"{c['out_power_l_ge4']:.3g}",
                       f"{c['out_power_l0']:.3g}", f"{c['out_share_l1_3']:.3f}", f"{c['rms_gain']:.3f}"], wid))

    print("\n=== 3b. Difference of two members (different keys, same inputs), one step ===")
    hdr = ["noise", "chan", "rms", "share l1-3", "share l0", "rms(gmean)"]
    wid = [11, 4, 9, 10, 9, 10]
    print(row(hdr, wid))
    for lab, e in r["two_members"].items():
        for k, name in enumerate(names + ["sp"]):
            c = e[name]
            print(row([lab if k == 0 else "", name, f"{c['rms']:.4g}", f"{c['share_l1_3']:.3f}",
                       f"{c['share_l0']:.3f}", f"{c['rms_global_mean']:.4g}"], wid))
        l0 = e["share_l0_per_channel"]
        print(f"{'':11}  l0 share, all channels: " + ", ".join(f"{c.split('_')[0][:4]}{c.split('@')[-1] if '@' in c else ''}"
                                                              f"={v:.2f}" for c, v in l0.items()))

    f = r["free_run"]
    print(f"\n=== 4. Free run from 2000-04-01T00, window days {f['window_days'][0]:.2f}-{f['window_days'][1]:.0f}: "
          "ens-mean zonal mean minus archive climatology ===")
    hdr = ["variant", "M", "chan", "max|d|", "at lat", "S row", "N row", "dsp[Pa]", "nonfinite"]
    wid = [10, 2, 4, 8, 7, 8, 8, 8, 9]
    print(row(hdr, wid))
    for var in r["ensemble"]:  # the variants, in the order they ran
        if var not in f:
            continue
        e = f[var]
        for k, name in enumerate(names):
            c = e[name]
            print(row([var if k == 0 else "", e["members"] if k == 0 else "", name, f"{c['max_abs']:.4g}",
                       f"{c['argmax_lat']:.1f}", f"{c['south_pole_row']:+.4g}", f"{c['north_pole_row']:+.4g}",
                       f"{e['global_mean_sp_minus_truth_Pa']:+.1f}" if k == 0 else "",
                       e["nonfinite_count"] if k == 0 else ""], wid))
    sh = f.get("shipped")
    if sh:
        d = sh["global_mean_sp_minus_truth_daily_Pa"]
        print("  shipped global-mean sp - truth, every 5 days [Pa]: " + ", ".join(f"{v:+.0f}" for v in d[4::5]))
        t = np.asarray(sh["t850_zonal_mean_polar_rows_daily_K"]) - np.asarray(sh["t850_clim_polar_rows_K"])
        print("  shipped t850 polar rows - clim, every 5 days [K] (S/N): "
              + ", ".join(f"{a:+.1f}/{b:+.1f}" for a, b in t[4::5]))
    print(f"\ncheck vs EnsembleRunner: max rel diff {r['check_vs_EnsembleRunner_max_rel_diff']:.1e}; "
          f"runtime {r['runtime_s']:.0f}s")
