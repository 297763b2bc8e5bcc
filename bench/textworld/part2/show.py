import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    print(r['variant'], {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()
                         if k not in ('detail', 'sbs', 'sbs_rows', 'train', 'variant')})
    d = r['detail']
    print('  books k40 auc/forget/holdout/margin', [round(d[f'books_k40_{x}'], 3) for x in ('auc', 'forget_mean', 'holdout_mean', 'margin')],
          'news k40', [round(d[f'news_k40_{x}'], 3) for x in ('auc', 'forget_mean', 'holdout_mean', 'margin')],
          'books k100 auc', round(d['books_k100_auc'], 3))
    for sp, t in r['sbs'].items():
        print('  ', sp, {s: (d['n'], d['accuracy'] if d['accuracy'] is None else round(d['accuracy'], 2), d['recovered'], d['recovery'] if d['recovery'] is None else round(d['recovery'], 2)) for s, d in t.items()})
