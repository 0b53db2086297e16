"""Korean queries for the search test: what a reader types, and the word(s) a relevant page must contain.

A page is relevant when its note text (what the page shows of the note: title,
names, tags, summary, body, sources) contains every word: Hangul words as
substrings (so "신경망" counts inside "합성곱신경망"), Latin words as whole words
in any case ("GAN" in "GAN과", not in "organ" or "DCGAN").
"""

QUERIES: list[tuple[str, str, tuple[str, ...]]] = [
    # (kind, query, words a relevant page contains)
    ("bare noun", "카패시", ("카패시",)),
    ("bare noun", "역전파", ("역전파",)),
    ("bare noun", "텐서플로", ("텐서플로",)),
    ("bare noun", "신경망", ("신경망",)),
    ("bare noun", "쿠오라", ("쿠오라",)),
    ("bare noun", "게이트", ("게이트",)),
    ("bare noun", "논문", ("논문",)),
    ("bare noun", "레딧", ("레딧",)),
    ("bare noun", "뉴런", ("뉴런",)),
    ("bare noun", "구글", ("구글",)),
    ("noun in a compound", "학습", ("학습",)),
    ("noun in a compound", "러닝", ("러닝",)),
    ("noun in a compound", "주행", ("주행",)),
    ("noun in a compound", "응답", ("응답",)),
    ("noun in a compound", "추상화", ("추상화",)),
    ("noun in a compound", "모델", ("모델",)),
    ("other particle", "카패시의", ("카패시",)),
    ("other particle", "역전파는", ("역전파",)),
    ("other particle", "텐서플로를", ("텐서플로",)),
    ("other particle", "신경망이", ("신경망",)),
    ("other particle", "논문에서", ("논문",)),
    ("other particle", "게이트를", ("게이트",)),
    ("other particle", "강화학습으로", ("강화학습",)),
    ("other particle", "쿠오라에서", ("쿠오라",)),
    ("Latin name with particle", "Karpathy의", ("karpathy",)),
    ("Latin name with particle", "Gym을", ("gym",)),
    ("Latin name with particle", "OpenAI가", ("openai",)),
    ("Latin name with particle", "PixelCNN의", ("pixelcnn",)),
    ("Latin name with particle", "GAN을", ("gan",)),
    ("Latin name with particle", "Hinton의", ("hinton",)),
    ("multi-word", "카패시 역전파", ("카패시", "역전파")),
    ("multi-word", "강화학습 퐁", ("강화학습", "퐁")),
    ("multi-word", "구글 브레인", ("구글", "브레인")),
    ("multi-word", "OpenAI Gym", ("openai", "gym")),
    ("multi-word", "제프 딘의 답변", ("제프", "딘", "답변")),
]
