import json
rows = [json.loads(l) for l in open('bench2.jsonl')] + [json.loads(l) for l in open('bench2_overunlearn.jsonl')]
f = lambda v, p=3: "" if v is None else f"{v:.{p}f}"
print("| variant | verbmem_f | knowmem_f | knowmem_r | privleak (fixed) | AUC (official orient.) | books Min-40% forget / holdout | news AUC | ref_agree_f | ref_gap_f | ref_absgap_f | ref_gap_r |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    d = r['detail']
    print(f"| {r['variant']} | {f(r['verbmem_f'])} | {f(r['knowmem_f'])} | {f(r['knowmem_r'])} | {r['privleak']:+.1f} | {f(r['mink_auc'])} | "
          f"{d['books_k40_forget_mean']:.2f} / {d['books_k40_holdout_mean']:.2f} | {f(d['news_k40_auc'])} | "
          f"{f(r.get('ref_agree_f'), 2)} | {f(r.get('ref_gap_f'), 2)} | {f(r.get('ref_absgap_f'), 2)} | {f(r.get('ref_gap_r'), 2)} |")
print()
print("| variant | direct | indirect | relation (n=5) | implied | any | recovered (indirect / implied / any) of missed | retain: direct / indirect / relation / implied |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    t, u = r['sbs']['forget'], r['sbs']['retain']
    missed = 20 - round(t['direct']['accuracy'] * 20)
    print(f"| {r['variant']} | {f(t['direct']['accuracy'],2)} | {f(t['indirect']['accuracy'],2)} | {f(t['relation']['accuracy'],2)} | "
          f"{f(t['implied']['accuracy'],2)} | {f(t['any']['accuracy'],2)} | {t['indirect']['recovered']} / {t['implied']['recovered']} / {t['any']['recovered']} of {missed} | "
          f"{f(u['direct']['accuracy'],2)} / {f(u['indirect']['accuracy'],2)} / {f(u['relation']['accuracy'],2)} / {f(u['implied']['accuracy'],2)} |")
print()
for name in ('restor.json', 'restor_noreplay.json'):
    r = json.load(open(name))
    print(name, r['entities'], 'docs', r['corruption_docs'], 'inject', r['inject']['seconds'], 's; total', round(r['seconds']))
    print("| state | acc true answer | acc injected answer | other | recovery | retain QA (other entities) | unlearn s |")
    print("|---|---|---|---|---|---|---|")
    for k, s in r['states'].items():
        print(f"| {k} | {f(s['acc_clean'],2)} | {f(s['acc_corrupt'],2)} | {f(s['other'],2)} | {f(s['recovery'],2)} | {f(s['qa_acc_retain'],2)} | {f(s.get('seconds'),1)} |")
    print()
