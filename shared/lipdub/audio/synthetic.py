"""Synthetic speech for distillation: espeak-ng in many languages, voices, rates and pitches.

The student only has to imitate the teacher, so any speech-like audio the teacher can label is useful data.
Sentences in several languages plus random pseudo-words (read with each language's rules) give a wide spread
of phonemes; each utterance gets silence before and after, labelled as the resting mouth.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np

from lipdub import SAMPLES_PER_FRAME
from lipdub.media.audio import load_audio

SENTENCES = {
    "en-us": ["The quick brown fox jumps over the lazy dog while the farmer watches from the porch.",
              "Please remember to bring your umbrella, because the weather report promised heavy rain today.",
              "We measured every frame twice and found that the mouth opens slightly before the sound."],
    "en-gb": ["Would you mind opening the window? It is rather warm in here this afternoon.",
              "Thirty-three thousand people attended the match, despite the freezing wind."],
    "de": ["Der schnelle braune Fuchs springt über den faulen Hund, und alle lachen laut darüber.",
           "Morgen früh fahren wir mit dem Zug nach München und besuchen unsere Großeltern."],
    "fr-fr": ["Le petit chat dort tranquillement sur le canapé pendant que la pluie tombe dehors.",
              "Nous avons rendez-vous demain matin à neuf heures devant la gare du Nord."],
    "es": ["El perro corre por el parque mientras los niños juegan con una pelota roja.",
           "Mañana vamos a visitar a mi abuela, que vive en un pueblo cerca de la montaña."],
    "it": ["Il gatto nero dorme sul divano mentre fuori piove e il vento soffia forte.",
           "Domani mattina andremo al mercato a comprare frutta, verdura e formaggio fresco."],
    "pt-br": ["O menino comprou pão e leite na padaria da esquina antes de ir para a escola.",
              "A música tocava alto enquanto todos dançavam na praça da cidade."],
    "ru": ["Вчера вечером мы долго гуляли по парку и разговаривали о путешествиях.",
           "Пожалуйста, закройте окно, потому что на улице очень холодно и ветрено."],
    "pl": ["Wczoraj wieczorem poszliśmy do kina, a potem zjedliśmy kolację w małej restauracji.",
           "Proszę zamknąć drzwi, bo w pokoju robi się bardzo zimno."],
    "nl": ["De kinderen spelen buiten in de tuin terwijl hun ouders koffie drinken.",
           "Morgen gaan we met de fiets naar het strand als het mooi weer is."],
    "sv": ["Vi åkte till landet i somras och badade i sjön varje morgon.",
           "Kan du hjälpa mig att bära de här tunga väskorna upp för trappan?"],
    "tr": ["Dün akşam arkadaşlarımla birlikte sahilde yürüyüş yaptık ve dondurma yedik.",
           "Lütfen kapıyı kapatır mısınız, içerisi çok soğuk oldu."],
    "cmn": ["今天天气很好，我们一起去公园散步吧。", "我昨天晚上看了一部非常有意思的电影，想推荐给你。"],
    "ja": ["きょうはとてもいいてんきですね、こうえんにさんぽにいきましょう。",
           "あしたのあさ、えきのまえでともだちとあうやくそくがあります。"],
    "ko": ["오늘은 날씨가 정말 좋아서 친구들과 함께 공원에 갔습니다.", "내일 아침에 시장에 가서 과일과 채소를 살 거예요."],
    "hi": ["आज मौसम बहुत अच्छा है, चलो पार्क में घूमने चलते हैं।", "कल सुबह हम ट्रेन से दिल्ली जाएंगे।"],
    "ar": ["الطقس جميل اليوم، دعونا نذهب إلى الحديقة معا.", "سوف نسافر غدا صباحا بالقطار إلى المدينة."],
    "vi": ["Hôm nay trời đẹp quá, chúng ta cùng đi dạo công viên nhé.", "Ngày mai tôi sẽ đi chợ mua rau và trái cây."],
    "id": ["Hari ini cuacanya sangat cerah, ayo kita jalan-jalan ke taman.", "Besok pagi kami akan naik kereta ke kota."],
    "el": ["Σήμερα ο καιρός είναι πολύ ωραίος, πάμε μια βόλτα στο πάρκο.", "Αύριο το πρωί θα πάμε στη θάλασσα."],
    "fi": ["Tänään on kaunis päivä, mennään kävelylle puistoon.", "Huomenna aamulla lähdemme junalla kaupunkiin."],
    "cs": ["Dnes je krásné počasí, pojďme se projít do parku.", "Zítra ráno pojedeme vlakem do Prahy."],
}
VARIANTS = ["", "+m1", "+m2", "+m3", "+m4", "+m5", "+m6", "+m7", "+f1", "+f2", "+f3", "+f4", "+f5", "+klatt",
            "+croak", "+Andrea", "+Alicia", "+Alex", "+Adam", "+Annie", "+john", "+max", "+steph"]
_CONSONANTS = list("bcdfghjklmnprstvwz") + ["sh", "ch", "th", "pr", "st", "kl", "tr", "br"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "au", "ee", "oo", "ei"]


def pseudo_words(rng: np.random.Generator, n_words: int) -> str:
    words = []
    for _ in range(n_words):
        syl = int(rng.integers(1, 4))
        words.append("".join(str(rng.choice(_CONSONANTS)) + str(rng.choice(_VOWELS)) for _ in range(syl)))
    return " ".join(words) + "."


def espeak(text: str, voice: str, rate: int, pitch: int, out: Path) -> None:
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "-w", str(out), text],
                   check=True, capture_output=True)


def synthetic_utterances(n: int, seed: int = 0) -> list[tuple[str, np.ndarray, int, int]]:
    """n espeak-ng utterances: (description, 16-kHz samples, silent frames before, silent frames after)."""
    rng = np.random.default_rng(seed)
    langs = sorted(SENTENCES)
    out = []
    with tempfile.TemporaryDirectory(prefix="lipdub-tts-") as tmp:
        for i in range(n):
            lang = langs[i % len(langs)]
            if rng.random() < 0.6:
                text = " ".join(rng.choice(SENTENCES[lang], size=int(rng.integers(1, 3)), replace=True))
            else:
                text = pseudo_words(rng, int(rng.integers(4, 14)))
            voice = lang + str(rng.choice(VARIANTS))
            rate, pitch = int(rng.integers(110, 230)), int(rng.integers(15, 85))
            wav = Path(tmp) / f"{i}.wav"
            try:
                espeak(text, voice, rate, pitch, wav)
            except subprocess.CalledProcessError:
                espeak(text, lang, rate, pitch, wav)
            samples = load_audio(wav)
            pre, post = int(rng.integers(3, 30)), int(rng.integers(3, 30))  # frames of silence (0.12-1.2 s)
            padded = np.concatenate([np.zeros(pre * SAMPLES_PER_FRAME, np.float32), samples,
                                     np.zeros(post * SAMPLES_PER_FRAME, np.float32)])
            out.append((f"espeak {voice} s{rate} p{pitch}", padded, pre, post))
    return out
